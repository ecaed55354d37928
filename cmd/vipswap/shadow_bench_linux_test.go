package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
	"golang.org/x/sys/unix"
)

// BenchmarkShadowProdLatency measures what a shadow at 100 % costs prod:
// 200 keep-alive clients on prod, in rounds without a shadow and with one
// to a slot that answers identically, alternated so a drift of the machine
// falls on both. It reports prod's p50 and p99 in each (over all rounds),
// the ratio of the p99s, the median over the rounds of each round's ratio
// (the steadier figure: one slow moment of the machine moves one round),
// vipswap's CPU per prod request, and the copies' results; it fails on any
// failed prod request or differing copy.
//
// The processes are real: vipswap serve, one blue and one green instance,
// and the clients in this process. The target slot's instance runs at the
// lowest CPU priority (nice 19): in production the standby slot runs on
// its own machines, so what it does must not take CPU from prod's
// instance on a machine that runs all three; what is measured is the work
// the copies cost vipswap itself.
//
//	go test -run XXX -bench BenchmarkShadowProdLatency -benchtime 3x ./cmd/vipswap
//
// SHADOW_BENCH_REQUESTS sets the requests per client per round (default 50).
func BenchmarkShadowProdLatency(b *testing.B) {
	for _, pace := range []time.Duration{0, 10 * time.Millisecond, 50 * time.Millisecond} {
		name := map[time.Duration]string{0: "saturated", 10 * time.Millisecond: "think=10ms", 50 * time.Millisecond: "think=50ms"}[pace]
		b.Run(name, func(b *testing.B) { benchShadowProd(b, pace) })
	}
}

func benchShadowProd(b *testing.B, think time.Duration) {
	const clients = 200
	perClient := 50
	if n, err := strconv.Atoi(os.Getenv("SHADOW_BENCH_REQUESTS")); err == nil && n > 0 {
		perClient = n
	}
	bin := vstest.Binary(b)
	// vipswap gets the last CPU to itself; this process (the clients) and
	// the instances it starts share the others. What the copies cost
	// vipswap then shows in prod's latency, and not what the clients or
	// the instances cost each other (on a machine that runs them all, as
	// no production switch does).
	serveCPU := runtime.NumCPU() - 1
	if serveCPU > 0 {
		pinSelf(b, serveCPU)
	}
	blue := vstest.Start(b, bin, "app", "--slot", "blue", "--version", "v1", "--listen", "127.0.0.1:0")
	// The same version in green: its answers are blue's.
	green := vstest.StartCmd(b, exec.Command("chrt", "--idle", "0", bin, "app", "--slot", "green", "--version", "v1", "--listen", "127.0.0.1:0"))
	addrs := map[string][]string{
		"blue":  {blue.WaitLine(b, appListening, 30*time.Second)[1]},
		"green": {green.WaitLine(b, appListening, 30*time.Second)[1]},
	}
	dir := b.TempDir()
	config := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(config, []byte(testConfig(dir, staticSlots(addrs))+"shadow:\n  ignore_fields: [slot, instance]\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	switchtest.ReclaimAfter(b, dir)
	serve := exec.Command(bin, "serve", "-c", config)
	if serveCPU > 0 {
		serve = exec.Command("taskset", "-c", strconv.Itoa(serveCPU), bin, "serve", "-c", config)
	}
	sw := switchtest.Attach(b, vstest.StartCmd(b, serve))
	sw.WaitHealthy(b)

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	b.Cleanup(hc.CloseIdleConnections)
	url := sw.Prod + "/api/test"
	round := func() (lat []time.Duration, failed int64) {
		var mu sync.Mutex
		var fails atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				mine := make([]time.Duration, 0, perClient)
				for range perClient {
					t := time.Now()
					resp, err := hc.Get(url)
					if err != nil {
						fails.Add(1)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						fails.Add(1)
						continue
					}
					mine = append(mine, time.Since(t))
					if think > 0 {
						// The client's think time, not a wait for anything;
						// drawn around think so that the clients do not
						// keep in step (200 requests at once, then none).
						time.Sleep(think/2 + rand.N(think))
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
	ctx := context.Background()
	round() // connections opened, caches warm: not measured
	pct := func(d []time.Duration, p int) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)*p/100]
	}
	var off, on []time.Duration
	var ratios []float64 // each round's p99 with the shadow over the p99 without, the round before
	var same, differ, dropped, busy, errs uint64
	var cpuOff, cpuOn time.Duration
	for b.Loop() {
		c0 := cpuTime(b, sw.PID())
		lat, failed := round()
		off = append(off, lat...)
		cpuOff += cpuTime(b, sw.PID()) - c0
		if _, err := sw.Client.StartShadow(ctx, wire.ShadowRequest{To: "green", Percent: 100}); err != nil {
			b.Fatal(err)
		}
		c0 = cpuTime(b, sw.PID())
		lat2, failed2 := round()
		on = append(on, lat2...)
		cpuOn += cpuTime(b, sw.PID()) - c0
		ratios = append(ratios, float64(pct(lat2, 99))/float64(pct(lat, 99)))
		if failed+failed2 != 0 {
			b.Fatalf("%d prod requests failed without a shadow, %d with one; want 0", failed, failed2)
		}
		var f *wire.ShadowFigures
		vstest.WaitFor(b, time.Minute, func() error {
			sh, err := sw.Client.Shadow(ctx)
			if err != nil {
				return err
			}
			if sh == nil || sh.Figures == nil {
				return io.ErrUnexpectedEOF
			}
			f = sh.Figures
			if f.Same+f.Differ+f.Error+f.Dropped["total"] != f.Sampled {
				return io.ErrNoProgress
			}
			return nil
		})
		if f.Differ != 0 {
			b.Fatalf("%d copies differ from an identical slot, want 0: %+v", f.Differ, f.Samples)
		}
		same, differ, dropped, errs = same+f.Same, differ+f.Differ, dropped+f.Dropped["total"], errs+f.Error
		busy += f.Dropped["busy"]
		if _, err := sw.Client.StopShadow(ctx, wire.ChangeRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(ratios)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(pct(off, 50)), "p50-off-ms")
	b.ReportMetric(ms(pct(on, 50)), "p50-on-ms")
	b.ReportMetric(ms(pct(off, 99)), "p99-off-ms")
	b.ReportMetric(ms(pct(on, 99)), "p99-on-ms")
	b.ReportMetric(float64(pct(on, 99))/float64(pct(off, 99)), "p99-ratio")
	b.ReportMetric(ratios[len(ratios)/2], "p99-ratio-median-round")
	b.ReportMetric(float64(cpuOff.Microseconds())/float64(len(off)), "cpu-us/req-off")
	b.ReportMetric(float64(cpuOn.Microseconds())/float64(len(on)), "cpu-us/req-on")
	b.ReportMetric(float64(same), "same")
	b.ReportMetric(float64(dropped), "dropped")
	b.ReportMetric(float64(busy), "dropped-busy")
	b.ReportMetric(float64(errs), "copy-errors")
	b.ReportMetric(0, "ns/op")
}

// cpuTime is the CPU time (user and system) process pid has used.
func cpuTime(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's name, which ends at the last ')'.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // clock ticks (USER_HZ)
}

// pinSelf keeps every thread of this process (and so what it starts) off
// CPU cpu.
func pinSelf(b *testing.B, cpu int) {
	var set unix.CPUSet
	for c := range runtime.NumCPU() {
		if c != cpu {
			set.Set(c)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatal(err)
	}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(t.Name())
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			b.Fatalf("pin thread %d: %v", tid, err)
		}
	}
}
