package measure

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/vipswap/vipswap/route"
)

// counter is a data plane's cumulative prod counts per slot.
type counter map[string]route.Counts

func (c counter) read(l route.Listener) map[string]route.Counts {
	out := map[string]route.Counts{}
	if l == route.Prod {
		for k, v := range c {
			out[k] = v
		}
	}
	return out
}

func (c counter) serve(slot string, ok, failed uint64) {
	n := c[slot]
	n.Classes[2] += ok
	n.Classes[5] += failed
	n.Failed += failed
	c[slot] = n
}

// The sampler finds the snapshot a window starts at, the first after a
// moment, when a slot last answered; its ring keeps History and no more;
// Rates are the differences between neighbours.
func TestSampler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		plane := counter{}
		s := NewSampler(plane.read)
		begin := time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := range 10 {
			<-tick.C
			if i < 5 {
				plane.serve("blue", 100, 1)
			}
			s.Take()
		}
		if got := s.At(begin.Add(-time.Hour)); !got.At.Equal(begin) || got.Counts.Slot("blue").Requests() != 0 {
			t.Fatalf("At before the first snapshot: %v, %d requests; want the start, zero", got.At.Sub(begin), got.Counts.Slot("blue").Requests())
		}
		if got := s.At(begin.Add(3500 * time.Millisecond)); got.At.Sub(begin) != 3*time.Second || got.Counts.Slot("blue").Requests() != 303 {
			t.Fatalf("At(3.5s): the snapshot at %s with %d requests; want 3s, 303", got.At.Sub(begin), got.Counts.Slot("blue").Requests())
		}
		if got := s.At(begin.Add(3 * time.Second)); got.At.Sub(begin) != 3*time.Second {
			t.Fatalf("At(3s): the snapshot at %s; want the one taken then", got.At.Sub(begin))
		}
		if got, ok := s.Since(begin.Add(3500 * time.Millisecond)); !ok || got.At.Sub(begin) != 4*time.Second {
			t.Fatalf("Since(3.5s): %s %v; want the snapshot at 4s", got.At.Sub(begin), ok)
		}
		if _, ok := s.Since(time.Now().Add(time.Second)); ok {
			t.Fatal("Since the future found a snapshot")
		}
		if got := s.LastActive("blue"); got.Sub(begin) != 5*time.Second {
			t.Fatalf("blue last active at %s; want 5s, its last requests", got.Sub(begin))
		}
		rates := Rates(s.Ordered())
		if len(rates) != 9 || rates[3].Slots["blue"].Requests != 101 || rates[3].Slots["blue"].Errors != 1 || rates[8].Slots["blue"].Requests != 0 {
			t.Fatalf("rates %+v; want 9 seconds, 101 requests and 1 error a second while blue served, then none", rates)
		}
		// The ring keeps History: the oldest then is the start of the window.
		for range int(History / time.Second) {
			<-tick.C
			s.Take()
		}
		if n := len(s.Ordered()); n != int(History/time.Second) {
			t.Fatalf("%d snapshots kept; want %d", n, int(History/time.Second))
		}
		oldest := s.Ordered()[0]
		if got := s.At(begin); !got.At.Equal(oldest.At) {
			t.Fatalf("At before the history: %s; want the oldest kept, %s", got.At.Sub(begin), oldest.At.Sub(begin))
		}
	})
}

// Sub, Listener and Slot are per listener and slot.
func TestCounts(t *testing.T) {
	var a, b Counts
	a[route.Prod] = map[string]route.Counts{"blue": {Classes: [6]uint64{2: 10}}, "green": {Classes: [6]uint64{5: 3}}}
	a[route.Stage] = map[string]route.Counts{"green": {Classes: [6]uint64{2: 7}}}
	b[route.Prod] = map[string]route.Counts{"blue": {Classes: [6]uint64{2: 4}}}
	d := a.Sub(b)
	if d[route.Prod]["blue"].Requests() != 6 || d[route.Prod]["green"].Requests() != 3 || d[route.Stage]["green"].Requests() != 7 {
		t.Fatalf("Sub: %+v", d)
	}
	if n := a.Listener(route.Prod).Requests(); n != 13 {
		t.Fatalf("prod listener: %d requests; want 13", n)
	}
	if n := a.Slot("green").Requests(); n != 10 {
		t.Fatalf("green over both listeners: %d requests; want 10", n)
	}
}
