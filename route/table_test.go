package route

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func instances(slot string, n int) []*Instance {
	out := make([]*Instance, n)
	for i := range out {
		out[i] = NewInstance(slot, fmt.Sprintf("127.0.0.1:%d", 9000+i))
	}
	return out
}

func spec(weights map[string]uint32, routable map[string][]*Instance) Spec {
	var s Spec
	for _, name := range []string{"blue", "green", "red"} {
		if w, ok := weights[name]; ok {
			s.Listeners[Prod] = append(s.Listeners[Prod], Weighted{Slot: name, Weight: w})
		}
	}
	s.Listeners[Stage] = []Weighted{{Slot: "green", Weight: 1}}
	s.Routable = routable
	return s
}

func TestSlotFollowsWeights(t *testing.T) {
	blue, green := instances("blue", 2), instances("green", 2)
	routable := map[string][]*Instance{"blue": blue, "green": green}
	t.Run("single slot", func(t *testing.T) {
		tb := Build(spec(map[string]uint32{"blue": 1}, routable))
		for range 100 {
			if s := tb.Slot(Prod); s.Name != "blue" {
				t.Fatalf("got %s, want blue", s.Name)
			}
		}
		if s := tb.Slot(Stage); s.Name != "green" {
			t.Fatalf("stage got %s, want green", s.Name)
		}
	})
	t.Run("weighted split", func(t *testing.T) {
		tb := Build(spec(map[string]uint32{"blue": 900, "green": 100}, routable))
		counts := map[string]int{}
		for range 10000 {
			counts[tb.Slot(Prod).Name]++
		}
		if g := counts["green"]; g < 700 || g > 1300 {
			t.Fatalf("green got %d of 10000, want about 1000", g)
		}
	})
	t.Run("every run of requests is split to within 1 %", func(t *testing.T) {
		// Issue 11: 20 % means 20 % ± 1 % over 10,000 requests; the draw
		// is deterministic, so this holds for every run, and for shorter
		// runs at any offset too, with 3 slots as with 2.
		for _, weights := range []map[string]uint32{
			{"blue": 800, "green": 200},
			{"blue": 701, "green": 1, "red": 298},
			{"blue": 333, "green": 333, "red": 334},
		} {
			all := map[string][]*Instance{"blue": blue, "green": green, "red": instances("red", 1)}
			tb := Build(spec(weights, all))
			for _, run := range []int{500, 10000} {
				for offset := range 3 {
					counts := map[string]int{}
					for range run {
						counts[tb.Slot(Prod).Name]++
					}
					for slot, w := range weights {
						want := float64(w) / 1000
						if got := float64(counts[slot]) / float64(run); got < want-0.01 || got > want+0.01 {
							t.Fatalf("weights %v, run %d #%d: %s got %.2f%%, want %.1f%% ± 1%%", weights, run, offset, slot, got*100, want*100)
						}
					}
				}
			}
		}
	})
	t.Run("zero weight gets nothing", func(t *testing.T) {
		tb := Build(spec(map[string]uint32{"blue": 1, "green": 0}, routable))
		for range 1000 {
			if s := tb.Slot(Prod); s.Name != "blue" {
				t.Fatalf("got %s, want blue", s.Name)
			}
		}
	})
	t.Run("no slot", func(t *testing.T) {
		if s := Build(Spec{}).Slot(Prod); s != nil {
			t.Fatalf("got %v, want nil", s)
		}
	})
}

func TestPick(t *testing.T) {
	insts := instances("blue", 3)
	tb := Build(spec(map[string]uint32{"blue": 1}, map[string][]*Instance{"blue": insts}))
	s := tb.Slot(Prod)
	t.Run("prefers the less loaded of two", func(t *testing.T) {
		insts[0].Begin(Prod)
		insts[0].Begin(Prod)
		insts[1].Begin(Prod)
		defer func() { insts[0].Abandon(Prod); insts[0].Abandon(Prod); insts[1].Abandon(Prod) }()
		counts := map[*Instance]int{}
		for range 3000 {
			counts[s.Pick(nil)]++
		}
		// With p2c the busiest instance wins only when paired with itself,
		// which never happens: it must get nothing.
		if counts[insts[0]] != 0 || counts[insts[2]] < counts[insts[1]] {
			t.Fatalf("picks %v: want the idle instance most, the busiest never", counts)
		}
	})
	t.Run("avoids tried instances", func(t *testing.T) {
		for range 100 {
			if got := s.Pick(insts[:2]); got != insts[2] {
				t.Fatalf("got %s, want the only untried instance", got.Addr)
			}
		}
		if got := s.Pick(insts); got != nil {
			t.Fatalf("got %v with every instance tried, want nil", got)
		}
	})
	t.Run("empty slot", func(t *testing.T) {
		tb := Build(spec(map[string]uint32{"blue": 1}, nil))
		if got := tb.Slot(Prod).Pick(nil); got != nil {
			t.Fatalf("got %v, want nil", got)
		}
	})
}

func TestCountersSurviveNewTables(t *testing.T) {
	insts := instances("blue", 1)
	old := Build(spec(map[string]uint32{"blue": 1}, map[string][]*Instance{"blue": insts}))
	i := old.Slot(Prod).Pick(nil)
	i.Begin(Prod)
	next := Build(spec(map[string]uint32{"blue": 1}, map[string][]*Instance{"blue": insts}))
	old.Retire()
	select {
	case <-old.Superseded():
	default:
		t.Fatal("Superseded not closed by Retire")
	}
	if got := next.Slot(Prod).Pick(nil).InFlight(Prod); got != 1 {
		t.Fatalf("in flight in the new table = %d, want 1", got)
	}
	i.End(Prod)
	if i.InFlight(Prod) != 0 || i.Served(Prod) != 1 {
		t.Fatalf("after End: in flight %d served %d", i.InFlight(Prod), i.Served(Prod))
	}
}

func TestLookupAndPickDoNotAllocate(t *testing.T) {
	insts := instances("blue", 4)
	tb := Build(spec(map[string]uint32{"blue": 90, "green": 10}, map[string][]*Instance{"blue": insts, "green": insts}))
	var tried [4]*Instance
	allocs := testing.AllocsPerRun(1000, func() {
		s := tb.Slot(Prod)
		i := s.Pick(nil)
		avoid := append(tried[:0], i)
		s.Pick(avoid)
	})
	if allocs != 0 {
		t.Fatalf("lookup and pick allocate %.1f times, want 0", allocs)
	}
}

func BenchmarkSlotAndPick(b *testing.B) {
	insts := instances("blue", 8)
	tb := Build(spec(map[string]uint32{"blue": 1}, map[string][]*Instance{"blue": insts}))
	b.ReportAllocs()
	for b.Loop() {
		tb.Slot(Prod).Pick(nil)
	}
}

func BenchmarkWeightedSlotAndPick(b *testing.B) {
	insts := instances("blue", 8)
	tb := Build(spec(map[string]uint32{"blue": 900, "green": 100}, map[string][]*Instance{"blue": insts, "green": insts}))
	b.ReportAllocs()
	for b.Loop() {
		tb.Slot(Prod).Pick(nil)
	}
}

// BenchmarkWeightedSlotParallel is the weighted choice from every core at
// once: the draw's shared counter is the one write on the request path.
func BenchmarkWeightedSlotParallel(b *testing.B) {
	insts := instances("blue", 8)
	tb := Build(spec(map[string]uint32{"blue": 900, "green": 100}, map[string][]*Instance{"blue": insts, "green": insts}))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.Slot(Prod)
		}
	})
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{2, 100, 10000} {
		b.Run(fmt.Sprint(n, "instances"), func(b *testing.B) {
			routable := map[string][]*Instance{"blue": instances("blue", n/2), "green": instances("green", n-n/2)}
			sp := spec(map[string]uint32{"blue": 1}, routable)
			b.ReportAllocs()
			for b.Loop() {
				Build(sp)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	blue, green, red := instances("blue", 1), instances("green", 1), instances("red", 1)
	s := spec(map[string]uint32{"blue": 1000}, map[string][]*Instance{"blue": blue, "green": green, "red": red})
	s.Routes = []Route{
		{PathPrefix: "/api/", Slot: "blue"},
		{PathPrefix: "/api/2.0/", Slot: "green"},
		{PathPrefix: "/api/2.0/", Header: "x-beta", Value: "1", Slot: "red"},
	}
	tb := Build(s)
	for _, c := range []struct {
		path   string
		header map[string][]string
		want   string
	}{
		{"/api/1.0/x", nil, "blue"},
		{"/api/2.0/x", nil, "green"},
		{"/api/2.0/x", map[string][]string{"X-Beta": {"1"}}, "red"},
		{"/api/2.0/x", map[string][]string{"X-Beta": {"2"}}, "green"},
		{"/api/2.0/x", map[string][]string{"X-Beta": {"0", "1"}}, "green"}, // twice: no header route
		{"/api/2.0/x", map[string][]string{"X-Beta": {"1", "1"}}, "green"},
		{"/api/2.0", nil, "green"}, // a prefix's trailing / is not needed to match
		{"/api/2.0x", nil, "blue"},
		{"/other", nil, ""},
	} {
		got := ""
		sl, err := tb.Routed(Path{c.path, c.path}, c.header)
		if err != nil {
			t.Fatalf("Routed(%q): %v", c.path, err)
		}
		if sl != nil {
			got = sl.Name
		}
		if got != c.want {
			t.Errorf("Routed(%q, %v) = %q, want %q", c.path, c.header, got, c.want)
		}
	}
	if tb.Named("red") == nil || tb.Named("nope") != nil {
		t.Fatal("Named does not know the slots of the spec")
	}
	if tb.Takes(Prod, "blue") == nil || tb.Takes(Prod, "green") != nil {
		t.Fatal("Takes: blue has all of prod, green none")
	}
	h := map[string][]string{"X-Beta": {"1"}}
	p := Path{"/api/2.0/x", "/api/2.0/x"}
	if n := testing.AllocsPerRun(1000, func() { tb.Routed(p, h) }); n != 0 {
		t.Fatalf("Routed allocates %v times", n)
	}
}

func TestQuantileInterpolates(t *testing.T) {
	var c Counts
	c.Latency.Buckets[21] = 1000 // all in (100 ms, 125 ms]
	if p := c.Quantile(0.99); p <= 100*time.Millisecond || p > 125*time.Millisecond {
		t.Fatalf("p99 of requests between 100 and 125 ms is %s", p)
	}
	if LatencyBounds[21] != .125 {
		t.Fatalf("bucket 21 is %g", LatencyBounds[21])
	}
	for _, b := range ExportBounds {
		if !slices.Contains(LatencyBounds[:], b) {
			t.Fatalf("export bound %g is not a latency bound", b)
		}
	}
}
