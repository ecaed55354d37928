package rollout

import (
	"testing"
	"time"

	"github.com/vipswap/vipswap/route"
)

func TestRoundLatency(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{7715625 * time.Nanosecond, 7720 * time.Microsecond},
		{118345 * time.Microsecond, 118 * time.Millisecond},
		{1254 * time.Millisecond, 1250 * time.Millisecond},
		{999 * time.Nanosecond, 999 * time.Nanosecond},
	} {
		if got := roundLatency(c.in); got != c.want {
			t.Errorf("roundLatency(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

// One source may weigh at most SourceCap times the median source; a
// single source, or a plane that cannot tell sources apart, is taken as
// counted.
func TestWeigh(t *testing.T) {
	var sources [route.SourceGroups]route.Tally
	sources[1] = route.Tally{Requests: 10, Errors: 1}
	sources[2] = route.Tally{Requests: 10, Errors: 1}
	sources[3] = route.Tally{Requests: 10, Errors: 1}
	sources[9] = route.Tally{Requests: 1000} // a flood of good requests
	total := route.Tally{Requests: 1030, Errors: 3}
	n, e, groups := weigh(total, sources)
	if n != 50 || e != 3 || groups != 4 {
		t.Fatalf("weigh: %v requests, %v errors, %d groups; want 50 (the flood as 20), 3, 4", n, e, groups)
	}
	var one [route.SourceGroups]route.Tally
	one[5] = route.Tally{Requests: 1000, Errors: 7}
	if n, e, _ := weigh(route.Tally{Requests: 1000, Errors: 7}, one); n != 1000 || e != 7 {
		t.Fatalf("a single source weighed as %v requests, %v errors; want it as counted", n, e)
	}
	if n, e, g := weigh(route.Tally{Requests: 40, Errors: 2}, [route.SourceGroups]route.Tally{}); n != 40 || e != 2 || g != 0 {
		t.Fatalf("no sources: %v, %v, %d; want the total as counted", n, e, g)
	}
}
