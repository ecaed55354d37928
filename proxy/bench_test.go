package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/vipswap/vipswap/route"
)

// BenchmarkRoundTrip is one GET through the proxy to a loopback instance,
// over keep-alive connections on both sides.
func BenchmarkRoundTrip(b *testing.B) {
	payload := []byte(`{"slot":"blue","version":"1","instance":"bench"}`)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }))
	defer backend.Close()
	inst := route.NewInstance("blue", backend.Listener.Addr().String())
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{inst}, nil))
	front := httptest.NewServer(p.Handler(route.Prod))
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(front.URL)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkPublish builds a routing table and publishes it, as the
// controller does on every swap or health change, for tables of 2, 100 and
// 10,000 instances. Publishing itself is one atomic swap whatever the load.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{2, 100, 10000} {
		b.Run(fmt.Sprint(n, "instances"), func(b *testing.B) {
			insts := make([]*route.Instance, n)
			for i := range insts {
				insts[i] = route.NewInstance("blue", fmt.Sprintf("127.0.0.1:%d", i))
			}
			p := New(Options{})
			b.ReportAllocs()
			rev := uint64(0)
			for b.Loop() {
				rev++
				p.Apply(table(rev, insts[:n/2], insts[n/2:]))
			}
		})
	}
}
