package shadow_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/shadow"
)

// BenchmarkProdWithShadow runs 200 clients on prod, without a shadow and
// then with one at 100 % to a slot that answers identically, and reports
// prod's p99 for each and their ratio (p99-ratio; the bar is 1.10), with
// 0 failed prod requests and 0 differing copies demanded. Each iteration
// is 200 clients × 10 requests per run; -benchtime=1x keeps it short.
// "saturated": each client sends its next request as soon as it has an
// answer, so the machine's CPU is the limit and the copies' own work (a
// second exchange, and the target's, on the same cores) shows in prod's
// latency; "paced": each client waits 20ms between requests, as clients
// do (about 10,000 requests/s, still near what two cores shared by the
// clients, prod, the target and the proxy can do); "light": 100ms (about
// 2,000 requests/s), so that the CPU the target slot's own copies take
// (on another machine in production, on the same cores here) does not
// saturate the machine, and the ratio shows what the mirror costs prod's path.
func BenchmarkProdWithShadow(b *testing.B) {
	for _, pace := range []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond} {
		name := map[time.Duration]string{0: "saturated", 20 * time.Millisecond: "paced", 100 * time.Millisecond: "light"}[pace]
		b.Run(name, func(b *testing.B) { benchShadow(b, pace) })
	}
}

func benchShadow(b *testing.B, pace time.Duration) {
	const clients, perClient = 200, 10
	answer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[1,2,3],"name":"same"}`)
	}
	green := httptest.NewServer(http.HandlerFunc(answer))
	b.Cleanup(green.Close)
	r := newRig(b, answer, green.Listener.Addr().String(), shadow.Options{MaxConns: benchConns})
	r.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	b.Cleanup(r.client.CloseIdleConnections)
	run := func() (lat []time.Duration, failed int64) {
		var mu sync.Mutex
		var fails atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				mine := make([]time.Duration, 0, perClient)
				for range perClient {
					t := time.Now()
					resp, err := r.client.Get(r.prod + "/api/test")
					if err != nil {
						fails.Add(1)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						fails.Add(1)
					}
					mine = append(mine, time.Since(t))
					if pace > 0 {
						time.Sleep(pace) // a client's think time, not a wait for anything
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		return lat, fails.Load()
	}
	run() // connections opened, buffers warm: not measured
	var off, on []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		r.m.Set(nil)
		lat, failed := run()
		off = append(off, lat...)
		r.start(100, []string{"GET", "HEAD"})
		lat2, failed2 := run()
		on = append(on, lat2...)
		if failed+failed2 != 0 {
			b.Fatalf("%d prod requests failed without a shadow, %d with one; want 0", failed, failed2)
		}
		f := r.m.Figures()
		var done uint64
		vstest.WaitFor(b, 10*time.Second, func() error {
			f = r.m.Figures()
			if done = f.Same + f.Differ + f.Error + f.Dropped["total"]; done != f.Sampled {
				return io.ErrNoProgress
			}
			return nil
		})
		if f.Differ != 0 {
			b.Fatalf("%d copies differ from an identical slot, want 0: %+v", f.Differ, f.Samples)
		}
		b.ReportMetric(float64(f.Dropped["total"]), "dropped")
	}
	p99 := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)*99/100]
	}
	po, pn := p99(off), p99(on)
	b.ReportMetric(float64(po.Microseconds())/1000, "p99-off-ms")
	b.ReportMetric(float64(pn.Microseconds())/1000, "p99-on-ms")
	b.ReportMetric(float64(pn)/float64(po), "p99-ratio")
}

// benchConns is the mirror's connections in BenchmarkProdWithShadow.
var benchConns = 32
