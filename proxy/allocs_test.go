package proxy

import "testing"

// maxForwardAllocs is what forwarding one GET over keep-alive connections
// on both sides may allocate, the steady state (BenchmarkForwardKeepAlive
// measures it). The client's request, its URL and header map, the
// request's state and the cancellation watch are reused; what is left is
// the request target's and the two heads' values' strings (never reused:
// a handler may keep a string), and the instance's answer: its struct
// (with its body reader and its values' slices) and its header map, which
// the client's response writer shares until it has sent the head, after
// the instance connection went back to the pool.
const maxForwardAllocs = 6

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
