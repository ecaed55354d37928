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
//
// An answer without a length (chunked, as Go's servers send one larger than
// their buffer) is held to the same, but for the chunk decoder of the
// standard library (net/http/httputil), one per answer.
func TestForwardedKeepAliveAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	for _, tc := range []struct {
		name, answer, end string
		want              float64
	}{
		{"length", rawBackendAnswer, "}\r\n", 0},
		{"chunked", rawChunkedAnswer, "}\r\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawProxy(t, tc.answer, tc.end)
			for range 100 { // pools, buffers and the instance connection warmed up
				c.roundTrip(t)
			}
			got := testing.AllocsPerRun(2000, func() { c.roundTrip(t) })
			t.Logf("%.0f allocations per forwarded request", got)
			if got != tc.want {
				t.Fatalf("forwarding a keep-alive GET allocates %.0f times per request, want %.0f", got, tc.want)
			}
		})
	}
}
