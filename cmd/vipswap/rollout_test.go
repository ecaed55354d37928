package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// startApps starts n sample apps of slot, with extra flags, and returns
// their addresses.
func startApps(t *testing.T, slot string, n int, extra ...string) []string {
	t.Helper()
	var addrs []string
	for range n {
		args := append([]string{"app", "--slot", slot, "--version", slot + "-v1", "--listen", "127.0.0.1:0"}, extra...)
		p := vstest.Start(t, vstest.Binary(t), args...)
		addrs = append(addrs, p.WaitLine(t, appListening, 30*time.Second)[1])
	}
	return addrs
}

// fastAnalysis judges a canary over 2 s from 20 requests, at most 1 %
// errors.
const fastAnalysis = `
analysis:
  window: 2s
  min_requests: 20
  max_error_rate: 0.01
`

func rolloutStatus(t *testing.T, sw *switchtest.Switch) wire.RolloutStatus {
	t.Helper()
	st, err := sw.Client.Rollout(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestWeightedSplit (issue 11): at 20 %, 4,000 requests land 20 % ± 1.5 %
// on the target (the draw is the sequence k·φ, not a coin: any run of
// draws lands within a few requests of the share, so more requests would
// prove nothing more); at 0 and 100, none and all.
func TestWeightedSplit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 2), "green": startApps(t, "green", 2)}
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	count := func(n int64) map[string]int64 {
		t.Helper()
		load := vstest.StartLoad(sw.Prod+"/api/test", 16, time.Minute)
		waitServed(t, load, n)
		res := load.Stop()
		if res.Failed != 0 {
			t.Fatalf("%d requests failed: %v", res.Failed, res.Errors)
		}
		return res.BySlot
	}
	if code, out := cli(t, sw, "shift", "--to", "green", "--weight", "20"); code != 0 || !strings.Contains(out, "prod is blue 80%, green 20%") {
		t.Fatalf("shift: exit %d: %s", code, out)
	}
	by := count(4000)
	share := float64(by["green"]) / float64(by["green"]+by["blue"])
	if math.Abs(share-0.20) > 0.015 {
		t.Fatalf("green got %.2f%% of %d requests, want 20%% ± 1.5%%", share*100, by["green"]+by["blue"])
	}
	st, _ := sw.Client.Status(context.Background())
	if st.Listeners[0].Weights["green"] != 20 || st.Listeners[1].Slot != "green" {
		t.Fatalf("status: %+v; want prod's weights with green 20 and stage still on green", st.Listeners)
	}
	if code, out := cli(t, sw, "shift", "--to", "green", "--weight", "0"); code != 0 {
		t.Fatalf("shift 0: exit %d: %s", code, out)
	}
	if by := count(2000); by["green"] != 0 {
		t.Fatalf("at 0%% green still got %d requests", by["green"])
	}
	if code, out := cli(t, sw, "shift", "--to", "green", "--weight", "100"); code != 0 {
		t.Fatalf("shift 100: exit %d: %s", code, out)
	}
	if by := count(2000); by["blue"] != 0 {
		t.Fatalf("at 100%% blue still got %d requests", by["blue"])
	}
	if st, _ := sw.Client.Status(context.Background()); st.Active != "green" || st.Standby != "blue" || st.Previous != "blue" {
		t.Fatalf("after shift 100: active %s standby %s previous %s", st.Active, st.Standby, st.Previous)
	}
}

// TestAutomaticRollback (issue 11): a canary that fails 10 % of its
// requests is rolled back before its plan completes (the time it took is
// reported: about one analysis window); afterwards no request reaches it,
// and the history holds the figures.
func TestAutomaticRollback(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 2), "green": startApps(t, "green", 2, "--fail-rate", "0.1")}
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+fastAnalysis)
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 16, 2*time.Minute)
	defer load.Stop()
	waitServed(t, load, 500)

	start := time.Now()
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--steps", "20,50,100", "--interval", "5s"); code != 0 {
		t.Fatalf("rollout start: exit %d: %s", code, out)
	}
	// A rollout that was not aborted ends with green at 100 %: the wait
	// then never ends well, however long it is.
	vstest.WaitFor(t, 60*time.Second, func() error {
		if st := rolloutStatus(t, sw); st.Running || st.Weights["blue"] != 100 {
			return fmt.Errorf("rollout running %v, weights %v", st.Running, st.Weights)
		}
		return nil
	})
	took := time.Since(start)
	h, err := sw.Client.History(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if h[0].Operation != "abort" || h[0].Actor != "rollout" || len(h[0].Changes) < 2 || !strings.Contains(strings.Join(h[0].Changes, " "), "analysis: error rate") {
		t.Fatalf("newest history entry %+v, want the automatic abort with its figures", h[0])
	}
	t.Logf("rolled back after %s: %s", took.Round(time.Millisecond), strings.Join(h[0].Changes, "; "))
	m := scrape(t, sw.Admin)
	if n, _ := metric(m, "vipswap_rollout_analyses_total", map[string]string{"verdict": "breach"}); n < 1 {
		t.Fatalf("vipswap_rollout_analyses_total{verdict=breach} is %v after an automatic rollback, want at least 1", n)
	}
	if step, ok := metric(m, "vipswap_rollout_step", nil); !ok || step != 0 {
		t.Fatalf("vipswap_rollout_step is %v (present %v) after the abort, want 0", step, ok)
	}
	if w, _ := metric(m, "vipswap_slot_weight", map[string]string{"listener": "prod", "slot": "blue"}); w != 1 {
		t.Fatalf("vipswap_slot_weight{prod,blue} is %v after the abort, want 1", w)
	}
	before := load.Stop()
	after := vstest.StartLoad(sw.Prod+"/api/test", 16, time.Minute)
	waitServed(t, after, 2000)
	if res := after.Stop(); res.BySlot["green"] != 0 || res.Failed != 0 {
		t.Fatalf("after the rollback: %v, %d failed; want no request on green", res.BySlot, res.Failed)
	}
	t.Logf("before the rollback: %d ok, %d failed (the canary's 500s)", before.OK, before.Failed)
}

// TestHealthyRolloutCompletes (issue 11): the same plan on a healthy canary
// runs to 100 % with no failed request under 200 concurrent clients, as do
// an abort and 20 shifts back and forth.
func TestHealthyRolloutCompletes(t *testing.T) {
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 2), "green": startApps(t, "green", 2)}
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+fastAnalysis)
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 200, 3*time.Minute)
	defer load.Stop()
	waitServed(t, load, 1000)
	ctx := context.Background()

	for i := range 20 {
		w := 50.0
		if i%2 == 1 {
			w = 0
		}
		if _, err := sw.Client.Shift(ctx, wire.ShiftRequest{To: "green", Weight: &w}); err != nil {
			t.Fatalf("shift %d: %v", i, err)
		}
		waitServed(t, load, load.OK()+100)
	}
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--steps", "10,25,50,100", "--interval", "1s"); code != 0 {
		t.Fatalf("rollout start: exit %d: %s", code, out)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		m := scrape(t, sw.Admin)
		step, _ := metric(m, "vipswap_rollout_step", map[string]string{"to": "green"})
		pass, _ := metric(m, "vipswap_rollout_analyses_total", map[string]string{"verdict": "pass"})
		w, _ := metric(m, "vipswap_slot_weight", map[string]string{"listener": "prod", "slot": "green"})
		if step < 1 || pass < 1 || w <= 0 || w >= 1 {
			return fmt.Errorf("metrics: rollout step %v, passing analyses %v, green's prod weight %v", step, pass, w)
		}
		return nil
	})
	vstest.WaitFor(t, 30*time.Second, func() error {
		if st, _ := sw.Client.Status(ctx); st.Active != "green" {
			return fmt.Errorf("active is %s, weights %v", st.Active, st.Listeners[0].Weights)
		}
		return nil
	})
	if st := rolloutStatus(t, sw); st.Running {
		t.Fatalf("the rollout still runs after reaching 100%%: %+v", st)
	}
	// An abort mid-way: back to green at once.
	if _, err := sw.Client.StartRollout(ctx, wire.RolloutRequest{To: "blue", Steps: []float64{30, 100}, Interval: "1m"}); err != nil {
		t.Fatal(err)
	}
	waitServed(t, load, load.OK()+2000)
	if code, out := cli(t, sw, "abort", "--reason", "changed my mind"); code != 0 || !strings.Contains(out, "prod is green 100%") {
		t.Fatalf("abort: exit %d: %s", code, out)
	}
	waitServed(t, load, load.OK()+2000)
	res := load.Stop()
	t.Logf("%d requests ok, %d failed, by slot %v", res.OK, res.Failed, res.BySlot)
	if res.Failed != 0 {
		t.Fatalf("%d requests failed, want 0; first: %v", res.Failed, res.Errors)
	}
}

// TestRolloutResumesAfterKill (issue 11): a rollout survives kill -9 of
// vipswap at the same step, with the time the step had already run.
func TestRolloutResumesAfterKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 1), "green": startApps(t, "green", 1)}
	cfg := testConfig(dir, staticSlots(addrs)) + fastAnalysis
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	// The step is long enough that no restart on a busy machine outlasts
	// it; what is checked is only the step's time, from our own clock.
	const interval = 10 * time.Minute
	asked := time.Now() // the step started after this ...
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--steps", "10,50,100", "--interval", interval.String()); code != 0 {
		t.Fatalf("rollout start: exit %d: %s", code, out)
	}
	begun := time.Now() // ... and before this
	vstest.WaitFor(t, 10*time.Second, func() error {
		if time.Since(begun) < 2*time.Second {
			return errNotYet // let the step run a while
		}
		return nil
	})
	sw.Signal(t, syscall.SIGKILL)
	sw.Wait(t, 10*time.Second)

	sw2 := switchtest.Serve(t, dir, cfg)
	queried := time.Now()
	st := rolloutStatus(t, sw2)
	// The step has run at least from begun to queried, at most from asked
	// to now: whatever the restart took, the time left lies in between (a
	// restart that reset the step's clock leaves too much, one that
	// counted the downtime twice too little).
	most := (interval - queried.Sub(begun)).Seconds()
	least := (interval - time.Since(asked)).Seconds()
	if !st.Running || st.Step != 0 || st.Weights["green"] != 10 {
		t.Fatalf("after the restart: %+v; want step 1 of the same rollout, green at 10%%", st)
	}
	if st.LeftSeconds > most+0.5 || st.LeftSeconds < least-0.5 {
		t.Fatalf("%.1f s left in the step after the restart, want %.1f to %.1f (%s less the time it ran)", st.LeftSeconds, least, most, interval)
	}
	t.Logf("%.1f s left in the step after the restart (between %.1f and %.1f)", st.LeftSeconds, least, most)
	if code, out := cli(t, sw2, "rollout", "status"); code != 0 || !strings.Contains(out, "[10%] → 50% → 100%") {
		t.Fatalf("rollout status: exit %d:\n%s", code, out)
	}
}

// TestGatesRunBesideTheAnalysis (attack on issue 11): while a step's gate
// hangs, a canary that starts failing is still rolled back within a
// window, by the analysis; the hung gate then has no say over the next
// rollout; a command gate that leaves children behind is killed whole at
// its timeout.
func TestGatesRunBesideTheAnalysis(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var failing atomic.Bool
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/ping" {
			if r.URL.Query().Get("slot") != "green" {
				w.WriteHeader(404)
			}
			return
		}
		if failing.Load() {
			w.WriteHeader(500)
		}
		io.WriteString(w, `{"slot":"green"}`)
	}))
	defer canary.Close()
	gateCalled := make(chan struct{}, 16)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gateCalled <- struct{}{}
		<-r.Context().Done()
	}))
	defer hang.Close()
	addrs := map[string][]string{"blue": startApps(t, "blue", 1), "green": {strings.TrimPrefix(canary.URL, "http://")}}
	plans := fmt.Sprintf(`
rollouts:
  hanging:
    steps: [10, 50, 100]
    interval: 1s
    gates:
      - http: %s/
        timeout: 3s
  orphans:
    steps: [10, 50, 100]
    interval: 1s
    gates:
      - command: [sh, -c, "sleep 1234.5 & sleep 1234.5"]
        timeout: 1s
`, hang.URL)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+fastAnalysis+plans)
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 8, 2*time.Minute)
	defer load.Stop()
	waitServed(t, load, 200)

	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--plan", "hanging"); code != 0 {
		t.Fatalf("rollout start: exit %d: %s", code, out)
	}
	select {
	case <-gateCalled:
	case <-time.After(15 * time.Second):
		t.Fatal("the gate was never called")
	}
	failing.Store(true)
	began := time.Now()
	vstest.WaitFor(t, 10*time.Second, func() error {
		if st := rolloutStatus(t, sw); st.Running {
			return fmt.Errorf("still running at step %d", st.Step)
		}
		return nil
	})
	h, _ := sw.Client.History(context.Background(), 1)
	if !strings.Contains(h[0].Reason, "automatic rollback: error rate") {
		t.Fatalf("the rollout ended with %+v; want the analysis to abort it while the gate hung", h[0])
	}
	t.Logf("rolled back %s after the canary began failing, its gate still hanging", time.Since(began).Round(time.Millisecond))

	// The hung gate belonged to that rollout: it must not abort the next.
	failing.Store(false)
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--steps", "10,100", "--interval", "1h"); code != 0 {
		t.Fatalf("second rollout: exit %d: %s", code, out)
	}
	deadline := time.Now().Add(5 * time.Second) // beyond the hung gate's 3 s timeout
	vstest.WaitFor(t, 10*time.Second, func() error {
		if !rolloutStatus(t, sw).Running {
			h, _ := sw.Client.History(context.Background(), 1)
			t.Fatalf("the second rollout ended: %+v", h[0])
		}
		if time.Now().Before(deadline) {
			return errNotYet
		}
		return nil
	})
	if code, out := cli(t, sw, "abort"); code != 0 {
		t.Fatalf("abort: exit %d: %s", code, out)
	}

	// A command gate whose shell leaves children: killed whole at 1 s.
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--plan", "orphans"); code != 0 {
		t.Fatalf("rollout start: exit %d: %s", code, out)
	}
	vstest.WaitFor(t, 15*time.Second, func() error {
		if rolloutStatus(t, sw).Running {
			return errNotYet
		}
		return nil
	})
	h, _ = sw.Client.History(context.Background(), 1)
	if !strings.Contains(h[0].Reason, "gate failed") {
		t.Fatalf("the orphans rollout ended with %+v, want a failed gate", h[0])
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := processesRunning("sleep 1234.5"); n > 0 {
			return fmt.Errorf("%d gate processes outlived their timeout", n)
		}
		return nil
	})
	if res := load.Stop(); res.Errors != nil && res.Failed > 0 {
		t.Logf("load: %d ok, %d failed (the canary's 500s)", res.OK, res.Failed)
	}
}

// processesRunning counts the processes whose command line is cmdline.
func processesRunning(cmdline string) int {
	dirs, _ := os.ReadDir("/proc")
	n := 0
	for _, d := range dirs {
		raw, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err == nil && strings.ReplaceAll(strings.TrimRight(string(raw), "\x00"), "\x00", " ") == cmdline {
			n++
		}
	}
	return n
}
