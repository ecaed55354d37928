package proxy

import "testing"

// TestForwardedKeepAliveAllocations holds forwarding one GET over
// keep-alive connections on both sides, the steady state
// (BenchmarkForwardKeepAlive measures it), to no allocation at all: the
// client's request, its URL and header map, the request's state, the
// cancellation watch and the instance's answer (its struct, body reader,
// header map and values' slices) are reused with the client's connection,
// and a string of the request target or of a head's values is given
// again when the same bytes come again.
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
	if got != 0 {
		t.Fatalf("forwarding a keep-alive GET allocates %.0f times per request, want none", got)
	}
}
