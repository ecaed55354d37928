package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// shadowConfig ignores what differs between any two sample apps of
// different slots: the slot, the version and the instance; and never
// drops copies for a busy CPU (a test machine is often busy, and the
// tests count every copy).
const shadowConfig = `
shadow:
  ignore_fields: [slot, version, instance]
  busy_wait: 0s
`

// shadowSettled waits until every copy the shadow sampled has a result, and
// returns the shadow.
func shadowSettled(t *testing.T, sw *switchtest.Switch, atLeast uint64) *wire.Shadow {
	t.Helper()
	var sh *wire.Shadow
	vstest.WaitFor(t, 30*time.Second, func() error {
		var err error
		if sh, err = sw.Client.Shadow(context.Background()); err != nil {
			return err
		}
		if sh == nil || sh.Figures == nil {
			return fmt.Errorf("no shadow figures: %+v", sh)
		}
		f := sh.Figures
		if done := f.Same + f.Differ + f.Error + f.Dropped["total"]; f.Sampled < atLeast || done != f.Sampled {
			return fmt.Errorf("sampled %d (want at least %d), %d with a result", f.Sampled, atLeast, done)
		}
		return nil
	})
	return sh
}

// TestShadowComparesAVersionThatDiffers (issue: shadow traffic): prod keeps
// 0 failed requests while every request is copied to green, whose answers
// carry one more field every 50th time; the differ rate is 2 % ± 0.5 %,
// the sample names the JSON path, and with that field ignored it is 0. A
// swap that makes green active ends the shadow in the same step, and the
// history says so.
func TestShadowComparesAVersionThatDiffers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 2), "green": startApps(t, "green", 2, "--differ-every", "50")}
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+shadowConfig)
	sw.WaitHealthy(t)
	st, _ := sw.Client.Status(context.Background())
	if st.Shadow != nil {
		t.Fatalf("status shadow %+v before any, want null", st.Shadow)
	}

	if code, out := cli(t, sw, "shadow", "start", "--to", "green", "--percent", "100"); code != 0 || !strings.Contains(out, "copied to green") {
		t.Fatalf("shadow start: exit %d: %s", code, out)
	}
	load := vstest.StartLoad(sw.Prod+"/api/test", 8, 2*time.Minute)
	waitServed(t, load, 2500)
	res := load.Stop()
	if res.Failed != 0 {
		t.Fatalf("%d prod requests failed with a shadow running: %v", res.Failed, res.Errors)
	}
	if res.BySlot["green"] != 0 {
		t.Fatalf("green answered %d prod requests, want none", res.BySlot["green"])
	}
	sh := shadowSettled(t, sw, 2000)
	f := sh.Figures
	t.Logf("figures: sampled %d, same %d, differ %d (%.2f%%), error %d, dropped %v, p99 prod %.1fms green %.1fms",
		f.Sampled, f.Same, f.Differ, 100*f.DifferRate, f.Error, f.Dropped, f.ProdP99MS, f.TargetP99MS)
	if f.DifferRate < 0.015 || f.DifferRate > 0.025 {
		t.Errorf("differ rate %.2f%%, want 2%% ± 0.5%%", 100*f.DifferRate)
	}
	if f.Error != 0 {
		t.Errorf("%d copies failed, want none", f.Error)
	}
	if len(f.Samples) == 0 || f.Samples[0].Where != "$.differ" || !strings.HasPrefix(f.Samples[0].Request, "GET /api/test") {
		t.Errorf("samples %+v, want GET /api/test differing at $.differ", f.Samples)
	}

	// The figures show in status, the CLI and /metrics.
	if code, out := cli(t, sw, "status"); code != 0 || !strings.Contains(out, "shadow: 100% of prod's GET,HEAD to green") {
		t.Errorf("status: exit %d, want a shadow line: %s", code, out)
	}
	if code, out := cli(t, sw, "shadow", "status"); code != 0 || !strings.Contains(out, "$.differ") {
		t.Errorf("shadow status: exit %d, want the differing path: %s", code, out)
	}
	if code, out := cli(t, sw, "shadow", "status", "--json"); code != 0 || !json.Valid([]byte(out)) {
		t.Errorf("shadow status --json: exit %d: %s", code, out)
	}
	metrics := getText(t, sw.Admin+"/metrics")
	for _, want := range []string{`vipswap_shadow_requests_total{result="differ"}`, `vipswap_shadow_latency_seconds_bucket{slot="green"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// With the field ignored, green answers as blue does.
	if code, out := cli(t, sw, "shadow", "stop"); code != 0 {
		t.Fatalf("shadow stop: exit %d: %s", code, out)
	}
	if st, _ := sw.Client.Status(context.Background()); st.Shadow != nil {
		t.Fatalf("status shadow %+v after stop, want null", st.Shadow)
	}
	if code, out := cli(t, sw, "shadow", "start", "--to", "green", "--percent", "100", "--ignore-field", "differ"); code != 0 {
		t.Fatalf("shadow start: exit %d: %s", code, out)
	}
	load = vstest.StartLoad(sw.Prod+"/api/test", 8, 2*time.Minute)
	waitServed(t, load, 1000)
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("%d prod requests failed: %v", res.Failed, res.Errors)
	}
	if f := shadowSettled(t, sw, 800).Figures; f.Differ != 0 || f.Same == 0 {
		t.Errorf("with differ ignored: same %d, differ %d (%+v), want 0 differing", f.Same, f.Differ, f.Samples)
	}

	// A swap makes green active: the shadow ends with it.
	if code, out := cli(t, sw, "swap"); code != 0 {
		t.Fatalf("swap: exit %d: %s", code, out)
	}
	if st, _ := sw.Client.Status(context.Background()); st.Shadow != nil {
		t.Fatalf("status shadow %+v after green became active, want null", st.Shadow)
	}
	h, err := sw.Client.History(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, e := range h {
		ops = append(ops, e.Operation)
	}
	if len(h) < 4 || h[0].Operation != "swap" || !strings.Contains(strings.Join(h[0].Changes, "; "), "shadow: to green ended, slot green takes prod traffic now") ||
		!strings.Contains(strings.Join(ops, ","), "shadow start,shadow stop,shadow start") {
		t.Errorf("history %v; swap changes %q: want shadow start, stop, start, and the swap ending it", ops, h[0].Changes)
	}
}

// TestShadowRefusesBadRequests: each mistake gets a one-line 400 naming it,
// and the state stays at its revision.
func TestShadowRefusesBadRequests(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 1), "green": startApps(t, "green", 1)}
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	before, _ := sw.Client.Status(context.Background())
	for _, tc := range []struct{ body, want string }{
		{`{"to":"green","percent":0}`, "percent"},
		{`{"to":"green","percent":101}`, "percent"},
		{`{"to":"green","percent":12.34}`, "percent"},
		{`{"to":"red","percent":10}`, `no slot "red"`},
		{`{"to":"blue","percent":10}`, "takes prod traffic"},
		{`{"to":"green","percent":10,"methods":["G T"]}`, "methods"},
		{`{"to":"green","percent":10,"methods":["CONNECT"]}`, "methods"},
		{`{"to":"green","percent":10,"duration":"soon"}`, "duration"},
		{`{"to":"green","percent":10,"ignore_headers":["a b"]}`, "ignore_headers"},
		{`{"to":"green","percent":10,"percnt":5}`, "percnt"},
		{`{"percent":10}`, "to"},
	} {
		resp, err := http.Post(sw.Admin+"/v1/shadow", "application/json", bytes.NewBufferString(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Error string }
		json.Unmarshal(b, &e)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) || strings.Contains(e.Error, "\n") {
			t.Errorf("%s: %d %q, want a one-line 400 naming %s", tc.body, resp.StatusCode, e.Error, tc.want)
		}
	}
	resp, err := http.NewRequest(http.MethodDelete, sw.Admin+"/v1/shadow", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Set("Content-Type", "application/json")
	if r, err := http.DefaultClient.Do(resp); err != nil || r.StatusCode != http.StatusConflict {
		t.Errorf("stop with none running: %v %v, want 409", r.StatusCode, err)
	} else {
		r.Body.Close()
	}
	after, _ := sw.Client.Status(context.Background())
	if after.Revision != before.Revision || after.Shadow != nil {
		t.Errorf("revision %d → %d, shadow %+v: want nothing changed", before.Revision, after.Revision, after.Shadow)
	}
}

func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestShadowEndsByItself: a shadow to a slot that fails every copy stops
// itself (its errors would be a load problem) and the history says why;
// one with a duration ends when it is over. Prod loses nothing meanwhile.
func TestShadowEndsByItself(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 1), "green": startApps(t, "green", 1, "--fail-rate", "1")}
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+"shadow:\n  stop_min_requests: 20\n  busy_wait: 0s\n")
	sw.WaitHealthy(t)
	if code, out := cli(t, sw, "shadow", "start", "--to", "green", "--percent", "100"); code != 0 {
		t.Fatalf("shadow start: exit %d: %s", code, out)
	}
	load := vstest.StartLoad(sw.Prod+"/api/test", 4, 2*time.Minute)
	defer load.Stop()
	ended := func(why string) wire.HistoryEntry {
		t.Helper()
		var e wire.HistoryEntry
		vstest.WaitFor(t, 30*time.Second, func() error {
			st, err := sw.Client.Status(context.Background())
			if err != nil || st.Shadow != nil {
				return fmt.Errorf("shadow still runs (%v)", err)
			}
			h, err := sw.Client.History(context.Background(), 1)
			if err != nil || len(h) == 0 || h[0].Operation != "shadow stop" {
				return fmt.Errorf("newest history entry %+v (%v), want a shadow stop", h, err)
			}
			e = h[0]
			return nil
		})
		if e.Actor != "vipswap" || !strings.Contains(e.Reason, why) {
			t.Errorf("shadow stop by %q because %q, want vipswap because …%s…", e.Actor, e.Reason, why)
		}
		return e
	}
	ended("slot green failed")
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("%d prod requests failed while green failed every copy: %v", res.Failed, res.Errors)
	}
	if code, out := cli(t, sw, "shadow", "start", "--to", "green", "--percent", "1", "--duration", "1s"); code != 0 {
		t.Fatalf("shadow start: exit %d: %s", code, out)
	}
	ended("duration is over")
}

// TestDeployShadowGateStopsBeforeTheSwitch (issue: shadow traffic): a
// deploy whose shadow gate allows 0.1 % differing answers, of a version
// that answers 1 in 50 differently, fails at its shadow step: prod stays
// on the old version with 0 failed requests, and the deploy's history
// entry names the differing requests.
func TestDeployShadowGateStopsBeforeTheSwitch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := strings.Replace(testConfig(dir, releaseSlots(1)), "admin:\n", "admin:\n  allow_run: true\n", 1) + shadowConfig
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 8, 2*time.Minute)
	defer load.Stop()
	waitServed(t, load, 100)
	code, out := runRelease(t, sw, "deploy", "--slot", "green", "--version", "2.0",
		"--shadow", "1m", "--shadow-max-differ-rate", "0.001", "--shadow-min-requests", "200", "--",
		"vipswap", "app", "--slot", "green", "--version", "{version}", "--listen", "127.0.0.1:{port}", "--differ-every", "50")
	if code != 1 || !strings.Contains(out, "shadow") || !strings.Contains(out, "$.differ") {
		t.Fatalf("deploy: exit %d, want 1 naming the shadow step and $.differ:\n%s", code, out)
	}
	if got := answeredBy(t, sw); got != "blue 1.0" {
		t.Fatalf("prod is answered by %s after the failed deploy, want blue 1.0", got)
	}
	e := lastEntry(t, sw, "deploy")
	if e.Result != "failed" || !strings.HasPrefix(e.Error, "shadow: ") || !strings.Contains(e.Error, "GET /api/test at $.differ") {
		t.Fatalf("deploy history entry: %s, %q; want failed at shadow naming the differing requests", e.Result, e.Error)
	}
	if got := stepNames(e); !strings.HasSuffix(got, "stage:ok shadow:failed") {
		t.Fatalf("deploy steps %s, want the shadow step to fail after stage", got)
	}
	if st, _ := sw.Client.Status(context.Background()); st.Shadow != nil || st.Active != "blue" {
		t.Fatalf("after the failed deploy: active %s, shadow %+v; want blue and none", st.Active, st.Shadow)
	}
	if res := load.Stop(); res.Failed != 0 || res.BySlot["green"] != 0 {
		t.Fatalf("prod under the deploy: %d failed (%v), by slot %v; want 0 failed, none on green", res.Failed, res.Errors, res.BySlot)
	}
	t.Logf("deploy error: %s", e.Error)
}
