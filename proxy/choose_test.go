package proxy

import (
	"fmt"
	"slices"

	"github.com/vipswap/vipswap/route"
	"testing"
	"time"
)

func TestAffinityCookie(t *testing.T) {
	for _, c := range []struct {
		a       Affinity
		overTLS bool
		want    string
	}{
		{Affinity{Cookie: "vipswap_slot"}, false, "vipswap_slot=green; Path=/; HttpOnly; SameSite=Lax"},
		{Affinity{Cookie: "s", MaxAge: time.Hour, Secure: true}, false, "s=green; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure"},
		{Affinity{Cookie: "vipswap_slot"}, true, "vipswap_slot=green; Path=/; HttpOnly; SameSite=Lax; Secure"},
	} {
		if got := affinityCookie(c.a, "green", c.overTLS); got != c.want {
			t.Errorf("affinityCookie(%+v) = %q, want %q", c.a, got, c.want)
		}
	}
}

// TestRemovedSlotsReleaseTheirCounters: 1,000 slots that came and went
// keep their counts under their names for a while (a measurement open
// when they went still sees them), then leave one "retired" entry behind;
// the listener's totals keep what they counted throughout.
func TestRemovedSlotsReleaseTheirCounters(t *testing.T) {
	p := New(Options{})
	for i := range 1000 {
		name := fmt.Sprintf("unit-%d", i)
		inst := route.NewInstance(name, "127.0.0.1:1")
		tb := route.Build(route.Spec{Listeners: [2][]route.Weighted{{{Slot: "blue", Weight: 1}, {Slot: name, Weight: 1}}},
			Members: map[string][]*route.Instance{name: {inst}}})
		p.Apply(tb)
		p.stats(tb.Named(name))[route.Prod].failed.Add(1)
	}
	p.Apply(route.Build(route.Spec{Listeners: [2][]route.Weighted{{{Slot: "blue", Weight: 1}}}}))
	if c := p.Counters(route.Prod); c["unit-7"].Failed != 1 {
		t.Fatalf("a slot removed just now: %+v, want its counts under its name", c["unit-7"])
	}
	if got := p.Failed(route.Prod); got != 1000 {
		t.Fatalf("Failed(prod) = %d after the slots went, want the 1,000 they counted", got)
	}
	p.statsMu.Lock()
	p.ageLocked(time.Now().Add(retiredFor + time.Minute))
	p.statsMu.Unlock()
	c := p.Counters(route.Prod)
	if n := len(c); n > 3 {
		t.Fatalf("%d slots' counters kept after 1,000 came and went long ago, want at most blue, none and retired", n)
	}
	if c[route.RetiredSlots].Failed != 1000 || p.Failed(route.Prod) != 1000 {
		t.Fatalf("retired %+v, Failed %d; want the 1,000 failures kept", c[route.RetiredSlots], p.Failed(route.Prod))
	}
}

// The bucket a latency lands in is the first whose bound is not below it,
// however the lookup finds it.
func TestLatencyBucket(t *testing.T) {
	for _, n := range []int64{0, 1, 999_999, 1_000_000, 1_000_001, 12_000_000, 125_000_000, 125_000_001, 9_999_999_999, 10_000_000_000, 10_000_000_001, 1 << 62} {
		var h histogram
		h.record(time.Duration(n))
		want, _ := slices.BinarySearch(latencyNanos[:], n)
		if h.buckets[want].Load() != 1 {
			t.Errorf("%d ns did not land in bucket %d", n, want)
		}
	}
}
