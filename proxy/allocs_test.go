package proxy

import "testing"

// maxForwardAllocs is what forwarding one GET over keep-alive connections
// on both sides may allocate, the steady state (BenchmarkForwardKeepAlive
// measures it): the request and its URL, the two heads' header maps and
// values, the answer, the request's state and the cancellation watch.
// Lower it when the path allocates less; it is not zero yet.
const maxForwardAllocs = 15

func TestForwardedKeepAliveAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	c := rawProxy(t)
	for range 100 { // pools, buffers and the instance connection warmed up
		c.roundTrip(t)
	}
	got := testing.AllocsPerRun(2000, func() { c.roundTrip(t) })
	t.Logf("%.0f allocations per forwarded request", got)
	if got > maxForwardAllocs {
		t.Fatalf("forwarding a keep-alive GET allocates %.0f times, more than %d", got, maxForwardAllocs)
	}
}
