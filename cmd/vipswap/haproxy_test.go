package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/driver/haproxy"
	"github.com/vipswap/vipswap/internal/haproxytest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// startWithHAProxy starts a real HAProxy in front of n instances per slot
// and vipswap driving it, and waits until HAProxy shows vipswap's state.
func startWithHAProxy(t *testing.T, n int, health string) (*haproxytest.HAProxy, *switchtest.Switch, map[string][]*vstest.App) {
	t.Helper()
	hx, sw, apps, _ := startHAProxyWith(t, n, "health: "+health, nil)
	return hx, sw, apps
}

// startHAProxyWith is startWithHAProxy with more lines for the haproxy
// block (health:, interval: ...) and, if set, the configuration's
// instance addresses rewritten by addr. It returns vipswap's
// configuration too, to restart it.
func startHAProxyWith(t *testing.T, n int, block string, addr func(string) string) (*haproxytest.HAProxy, *switchtest.Switch, map[string][]*vstest.App, hxSetup) {
	t.Helper()
	apps, addrs := startStatic(t, n)
	hx := haproxytest.Start(t, addrs, "blue", "green")
	setup := hxSetup{dir: t.TempDir()}
	given := map[string][]string{}
	for slot, as := range addrs {
		for _, a := range as {
			if addr != nil {
				a = addr(a)
			}
			given[slot] = append(given[slot], a)
		}
	}
	if !strings.Contains(block, "interval:") {
		block += "\n  interval: 200ms"
	}
	setup.cfg = testConfig(setup.dir, staticSlots(given)) + fmt.Sprintf(`haproxy:
  socket: %s
  maps: {prod: %s, stage: %s}
  %s
measure:
  before: 1s
  after: 1s
`, hx.Socket, hx.ProdMap, hx.StageMap, block)
	sw := switchtest.Serve(t, setup.dir, setup.cfg)
	sw.WaitHealthy(t)
	waitApplied(t, sw)
	return hx, sw, apps, setup
}

// hxSetup is where vipswap's configuration and state are.
type hxSetup struct{ dir, cfg string }

// waitApplied waits until vipswap says HAProxy shows the state in force.
func waitApplied(t *testing.T, sw *switchtest.Switch) wire.Status {
	t.Helper()
	var st wire.Status
	vstest.WaitFor(t, 10*time.Second, func() error {
		var err error
		if st, err = sw.Client.Status(context.Background()); err != nil {
			return err
		}
		if len(st.DataPlanes) != 1 || !st.DataPlanes[0].Applied || st.DataPlanes[0].Revision != st.Revision {
			return fmt.Errorf("HAProxy: %+v at revision %d", st.DataPlanes, st.Revision)
		}
		return nil
	})
	return st
}

// TestHAProxySwapsUnderLoad (issue 14): 200 concurrent clients through a
// real HAProxy while vipswap swaps 20 times: 0 failed; a shift to 30 %
// lands 30 % ± 3 %; each swap's history entry records how long HAProxy
// took to show it.
func TestHAProxySwapsUnderLoad(t *testing.T) {
	t.Parallel()
	hx, sw, _ := startWithHAProxy(t, 2, "vipswap")
	ctx := context.Background()
	load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 200, 2*time.Minute)
	waitServed(t, load, 500)
	var last wire.Change
	for i := range 20 {
		res, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: fmt.Sprintf("swap %d", i)})
		if err != nil || !res.Applied {
			t.Fatalf("swap %d: %+v, %v", i, res, err)
		}
		last = res
		waitServed(t, load, load.OK()+100)
	}
	res := load.Stop()
	t.Logf("through HAProxy, 200 clients, 20 swaps: %d ok, %d failed, by slot %v", res.OK, res.Failed, res.BySlot)
	if res.Failed != 0 || res.BySlot["blue"] == 0 || res.BySlot["green"] == 0 {
		t.Fatalf("%d failed (%v), by slot %v; want 0 failed and both slots serving", res.Failed, res.Errors, res.BySlot)
	}
	var e wire.HistoryEntry
	vstest.WaitFor(t, 20*time.Second, func() error {
		var err error
		if e, err = sw.Client.Entry(ctx, last.HistoryID); err != nil {
			return err
		}
		if e.Measurement == nil || e.Measurement.ConvergedSeconds <= 0 {
			return fmt.Errorf("measurement %+v: want HAProxy's convergence time", e.Measurement)
		}
		return nil
	})
	t.Logf("HAProxy showed the last swap %.2f ms after the commit", e.Measurement.ConvergedSeconds*1000)

	// A shift to 30 %: the share HAProxy sends.
	st, _ := sw.Client.Status(ctx)
	other := map[string]string{"blue": "green", "green": "blue"}[st.Active]
	if res, err := sw.Client.Shift(ctx, wire.ShiftRequest{To: other, Weight: new(30.0)}); err != nil || !res.Applied {
		t.Fatalf("shift: %+v, %v", res, err)
	}
	load = vstest.StartLoad("http://"+hx.Prod+"/api/test", 20, time.Minute)
	waitServed(t, load, 4000)
	res = load.Stop()
	share := float64(res.BySlot[other]) / float64(res.OK) * 100
	t.Logf("shift to 30%%: %s got %.1f%% of %d requests through HAProxy", other, share, res.OK)
	if res.Failed != 0 || share < 27 || share > 33 {
		t.Fatalf("%s got %.1f%% (%d failed); want 30%% ± 3%%, 0 failed", other, share, res.Failed)
	}
	if code, out := cli(t, sw, "status"); code != 0 || !strings.Contains(out, "haproxy "+hx.Socket+": shows revision") || !strings.Contains(out, "haproxy "+hx.Socket+": UP") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	// Each instance's SERVED counts what HAProxy sent it (read with its
	// statistics, every interval).
	vstest.WaitFor(t, 10*time.Second, func() error {
		st, err := sw.Client.Status(ctx)
		if err != nil {
			return err
		}
		var served int64
		for _, s := range st.Slots {
			for _, i := range s.Instances {
				if i.Served.Total() == 0 {
					return fmt.Errorf("%s/%s served 0 in status", s.Name, i.Addr)
				}
				served += i.Served.Total()
			}
		}
		if served < int64(res.OK) {
			return fmt.Errorf("the instances served %d in status; HAProxy answered at least %d", served, res.OK)
		}
		return nil
	})
}

// TestHAProxyRestartReapplies (issue 14): HAProxy restarted loses the
// runtime changes (its map files still send prod to blue); vipswap notices
// and applies the state again within a couple of seconds, and says so.
func TestHAProxyRestartReapplies(t *testing.T) {
	t.Parallel()
	hx, sw, _ := startWithHAProxy(t, 1, "haproxy")
	ctx := context.Background()
	if res, err := sw.Client.Swap(ctx, wire.ChangeRequest{}); err != nil || res.To != "green" {
		t.Fatalf("swap: %+v, %v", res, err)
	}
	rt := haproxy.Runtime{Addr: hx.Socket}
	prodMap := func() string {
		m, err := rt.ShowMap(ctx, hx.ProdMap)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprint(m)
	}
	if got := prodMap(); got != "[{0:9999 be_green}]" {
		t.Fatalf("HAProxy's prod map after the swap: %s", got)
	}
	hx.Kill(t)
	// vipswap sees it gone before it is back (the applied routing must
	// still count as lost, not as never applied).
	waitPlane(t, sw, false)
	restarted := time.Now()
	hx.Start(t)
	vstest.WaitFor(t, 5*time.Second, func() error {
		st, err := sw.Client.Status(ctx)
		if err != nil {
			return err
		}
		if p := st.DataPlanes[0]; p.Reapplied < 1 || !p.Applied {
			return fmt.Errorf("HAProxy plane %+v: want it re-applied", p)
		}
		if got := prodMap(); got != "[{0:9999 be_green}]" {
			return fmt.Errorf("HAProxy's prod map after its restart: %s", got)
		}
		return nil
	})
	t.Logf("re-applied %s after HAProxy restarted", time.Since(restarted).Round(time.Millisecond))
	if !strings.Contains(sw.Output(), "re-applied to HAProxy") {
		t.Fatal("vipswap did not log the re-apply")
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		_, err := routesTo(ctx, http.DefaultClient, &switchtest.Switch{Prod: "http://" + hx.Prod}, "green")
		return err
	})
}

// TestHAProxyUnreachable (issue 14): with HAProxy's runtime API gone, a
// swap fails with a 503 naming it, and the state is not changed.
func TestHAProxyUnreachable(t *testing.T) {
	t.Parallel()
	hx, sw, _ := startWithHAProxy(t, 1, "vipswap")
	ctx := context.Background()
	before, _ := sw.Client.Status(ctx)
	hx.Kill(t)
	_, err := sw.Client.Swap(ctx, wire.ChangeRequest{})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "HAProxy runtime API") {
		t.Fatalf("a swap with HAProxy down: %v; want a 503 naming its runtime API", err)
	}
	after, _ := sw.Client.Status(ctx)
	if after.Revision != before.Revision || after.Active != before.Active {
		t.Fatalf("the refused swap changed the state: revision %d -> %d, active %s -> %s", before.Revision, after.Revision, before.Active, after.Active)
	}
	// Once vipswap has seen it unreachable, HAProxy comes back showing
	// the same routing: the plane is applied again without a change.
	waitPlane(t, sw, false)
	hx.Start(t)
	waitApplied(t, sw)
	if res, err := sw.Client.Swap(ctx, wire.ChangeRequest{}); err != nil || !res.Applied {
		t.Fatalf("a swap once HAProxy is back: %+v, %v", res, err)
	}
}

// TestHAProxyRollingDeploy (issue 14): the recipe of seed 004 done by
// vipswap through HAProxy: for each server of the active slot, drain it
// and wait for 0 sessions (drain --wait), restart it with a new version,
// wait until HAProxy's checks say UP, ready it; under load, 0 failed.
func TestHAProxyRollingDeploy(t *testing.T) {
	t.Parallel()
	hx, sw, apps := startWithHAProxy(t, 2, "haproxy")
	ctx := context.Background()
	load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 50, 2*time.Minute)
	waitServed(t, load, 300)
	for _, app := range apps["blue"] {
		if code, out := cli(t, sw, "drain", "blue", app.Addr, "--wait", "--timeout", "20s"); code != 0 || !strings.Contains(out, "drained in") {
			t.Fatalf("drain --wait: exit %d\n%s", code, out)
		}
		app.Signal(t, syscall.SIGTERM)
		app.Wait(t, 20*time.Second)
		next := vstest.Start(t, vstest.Binary(t), "app", "--slot", "blue", "--version", "blue-v2", "--listen", app.Addr)
		next.WaitLine(t, regexp.MustCompile(`listening on`), 20*time.Second)
		vstest.WaitFor(t, 15*time.Second, func() error {
			st, err := sw.Client.Status(ctx)
			if err != nil {
				return err
			}
			for _, in := range st.Slots[0].Instances {
				if in.Addr == app.Addr && (!in.Healthy || !strings.Contains(strings.Join(in.DataPlanes, " "), ": DRAIN")) {
					return fmt.Errorf("%s: healthy %v, HAProxy %v; want it UP again (still drained)", in.Addr, in.Healthy, in.DataPlanes)
				}
			}
			return nil
		})
		if code, out := cli(t, sw, "ready", "blue", app.Addr); code != 0 {
			t.Fatalf("ready: exit %d\n%s", code, out)
		}
		waitServed(t, load, load.OK()+200)
	}
	res := load.Stop()
	t.Logf("rolling deploy of blue through HAProxy under 50 clients: %d ok, %d failed", res.OK, res.Failed)
	if res.Failed != 0 {
		t.Fatalf("%d failed: %v", res.Failed, res.Errors)
	}
	out, err := http.Get("http://" + hx.Prod + "/api/test")
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Version string }
	json.NewDecoder(out.Body).Decode(&body)
	out.Body.Close()
	if body.Version != "blue-v2" {
		t.Fatalf("after the rolling deploy prod answers version %q, want blue-v2", body.Version)
	}
}

// TestHAProxyRolloutAnalysis (issue 14): with HAProxy carrying all the
// traffic, a rollout's analysis reads HAProxy's counters: a canary that
// fails 10 % of its requests is rolled back.
func TestHAProxyRolloutAnalysis(t *testing.T) {
	t.Parallel()
	addrs := map[string][]string{"blue": startApps(t, "blue", 1), "green": startApps(t, "green", 1, "--fail-rate", "0.1")}
	hx := haproxytest.Start(t, addrs, "blue", "green")
	dir := t.TempDir()
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+fastAnalysis+fmt.Sprintf(`haproxy:
  socket: %s
  maps: {prod: %s, stage: %s}
  interval: 200ms
`, hx.Socket, hx.ProdMap, hx.StageMap))
	sw.WaitHealthy(t)
	waitApplied(t, sw)
	load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 16, 2*time.Minute)
	defer load.Stop()
	waitServed(t, load, 300)
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--steps", "20,50,100", "--interval", "5s"); code != 0 {
		t.Fatalf("rollout start: exit %d: %s", code, out)
	}
	vstest.WaitFor(t, 15*time.Second, func() error {
		if st := rolloutStatus(t, sw); st.Running || st.Weights["blue"] != 100 {
			return fmt.Errorf("rollout running %v, weights %v", st.Running, st.Weights)
		}
		return nil
	})
	h, err := sw.Client.History(context.Background(), 1)
	if err != nil || h[0].Operation != "abort" || !strings.Contains(strings.Join(h[0].Changes, " "), "analysis: error rate") {
		t.Fatalf("newest history entry %+v, %v; want the automatic abort on HAProxy's figures", h, err)
	}
	t.Logf("through HAProxy: %s", strings.Join(h[0].Changes, "; "))
	waitApplied(t, sw)
}

// waitPlane waits until the HAProxy plane's status says applied (or not).
func waitPlane(t *testing.T, sw *switchtest.Switch, applied bool) {
	t.Helper()
	vstest.WaitFor(t, 10*time.Second, func() error {
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			return err
		}
		if len(st.DataPlanes) == 0 || st.DataPlanes[0].Applied != applied {
			return fmt.Errorf("HAProxy plane %+v: want applied=%v", st.DataPlanes, applied)
		}
		return nil
	})
}

// TestHAProxyMissingMapRefused: a map HAProxy does not know (a typo in
// haproxy.maps.stage) refuses a swap with a 503 naming it, before the
// state changes; it was applied half (prod's map committed, stage's not)
// and reported as a success.
func TestHAProxyMissingMapRefused(t *testing.T) {
	t.Parallel()
	_, addrs := startStatic(t, 1)
	hx := haproxytest.Start(t, addrs, "blue", "green")
	dir := t.TempDir()
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+fmt.Sprintf(`haproxy:
  socket: %s
  maps: {prod: %s, stage: %s/typo.map}
  interval: 200ms
`, hx.Socket, hx.ProdMap, dir))
	sw.WaitHealthy(t)
	ctx := context.Background()
	before, _ := sw.Client.Status(ctx)
	_, err := sw.Client.Swap(ctx, wire.ChangeRequest{})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "no map "+dir+"/typo.map (haproxy.maps.stage") {
		t.Fatalf("a swap with a map HAProxy does not know: %v; want a 503 naming the map", err)
	}
	after, _ := sw.Client.Status(ctx)
	if after.Revision != before.Revision || after.Active != before.Active {
		t.Fatalf("the refused swap changed the state: revision %d -> %d", before.Revision, after.Revision)
	}
	m, err := (&haproxy.Runtime{Addr: hx.Socket}).ShowMap(ctx, hx.ProdMap)
	if err != nil || fmt.Sprint(m) != "[{0:9999 be_blue}]" {
		t.Fatalf("HAProxy's prod map: %v, %v; want it untouched", m, err)
	}
}

// refusingSocket is a runtime API socket in front of HAProxy's that
// passes every command on, except that while refuse is set it answers
// the commands refuse matches with an error, as HAProxy does.
type refusingSocket struct {
	path   string
	mu     sync.Mutex
	refuse func(cmd string) bool
}

func startRefusingSocket(t *testing.T, upstream string) *refusingSocket {
	t.Helper()
	r := &refusingSocket{}
	r.path = haproxytest.ServeSocket(t, func(cmd string) string {
		r.mu.Lock()
		refuse := r.refuse != nil && r.refuse(strings.TrimSpace(cmd))
		r.mu.Unlock()
		if refuse {
			return "Refused by the test.\n\n"
		}
		return haproxytest.Forward(upstream, cmd)
	})
	return r
}

func (r *refusingSocket) set(refuse func(string) bool) {
	r.mu.Lock()
	r.refuse = refuse
	r.mu.Unlock()
}

// TestHAProxyApplyFailureWarns: when HAProxy passed the check before the
// commit but then does not apply the change, the change stands (it is in
// the state) and its answer says HAProxy has not applied it; once HAProxy
// takes commands again, vipswap applies it.
func TestHAProxyApplyFailureWarns(t *testing.T) {
	t.Parallel()
	_, addrs := startStatic(t, 1)
	hx := haproxytest.Start(t, addrs, "blue", "green")
	front := startRefusingSocket(t, hx.Socket)
	dir := t.TempDir()
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+fmt.Sprintf(`haproxy:
  socket: %s
  maps: {prod: %s, stage: %s}
  interval: 200ms
`, front.path, hx.ProdMap, hx.StageMap))
	sw.WaitHealthy(t)
	waitApplied(t, sw)
	ctx := context.Background()
	front.set(func(cmd string) bool { return strings.HasPrefix(cmd, "commit map") })
	// Through the CLI: the change is printed with its warning.
	code, out := cli(t, sw, "swap", "--json")
	st, _ := sw.Client.Status(ctx)
	want := fmt.Sprintf("haproxy %s has not applied revision %d: ", front.path, st.Revision)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "Refused by the test") || !strings.Contains(out, "it will be retried") {
		t.Fatalf("swap --json: exit %d\n%s\nwant the warning %q with HAProxy's answer", code, out, want)
	}
	// Through the API: the answer carries it.
	res, err := sw.Client.Shift(ctx, wire.ShiftRequest{To: "blue", Weight: new(50.0)})
	if err != nil || !res.Applied {
		t.Fatalf("shift: %+v, %v", res, err)
	}
	want = fmt.Sprintf("haproxy %s has not applied revision %d: ", front.path, res.Revision)
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, want) {
		t.Fatalf("the shift's warnings: %q; want %q", res.Warnings, want)
	}
	// As text too.
	code, out = cli(t, sw, "shift", "--to", "blue", "--weight", "40")
	st, _ = sw.Client.Status(ctx)
	want = fmt.Sprintf("warning: haproxy %s has not applied revision %d: ", front.path, st.Revision)
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("shift: exit %d\n%s\nwant %q", code, out, want)
	}
	front.set(nil)
	waitApplied(t, sw)
	m, err := (&haproxy.Runtime{Addr: hx.Socket}).ShowMap(ctx, hx.ProdMap)
	if err != nil || fmt.Sprint(m) != "[{0:5999 be_green} {6000:9999 be_blue}]" {
		t.Fatalf("HAProxy's prod map %v, %v; want the shift once it takes commands again", m, err)
	}
}

// TestHAProxyHostNameInstances: instances given as localhost:PORT (as
// configuration validation accepts) are HAProxy's servers at 127.0.0.1:
// swaps under load lose nothing, and vipswap adds no server. It added
// servers HAProxy showed with no address, put the real ones in
// maintenance (all of prod's traffic got 503), and failed every apply
// after.
func TestHAProxyHostNameInstances(t *testing.T) {
	t.Parallel()
	hx, sw, _, _ := startHAProxyWith(t, 1, "health: vipswap", func(a string) string {
		return "localhost:" + a[strings.LastIndex(a, ":")+1:]
	})
	ctx := context.Background()
	load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 20, time.Minute)
	waitServed(t, load, 200)
	for i := range 2 {
		if res, err := sw.Client.Swap(ctx, wire.ChangeRequest{}); err != nil || !res.Applied || len(res.Warnings) > 0 {
			t.Fatalf("swap %d: %+v, %v", i, res, err)
		}
		waitApplied(t, sw)
		waitServed(t, load, load.OK()+200)
	}
	res := load.Stop()
	if res.Failed != 0 || res.BySlot["green"] == 0 {
		t.Fatalf("%d failed (%v), by slot %v; want 0 failed and green serving after the first swap", res.Failed, res.Errors, res.BySlot)
	}
	servers, err := (&haproxy.Runtime{Addr: hx.Socket}).ShowServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.Name != "s1" || s.AdminState != 0 {
			t.Fatalf("HAProxy's servers %+v: want only the configured ones, in service", servers)
		}
	}
}

// TestHAProxyVipswapRestartUnderLoad: restarting vipswap while HAProxy
// serves loses no request. At start no instance has been probed: the first
// table drained every server of HAProxy until the probes answered.
func TestHAProxyVipswapRestartUnderLoad(t *testing.T) {
	t.Parallel()
	for _, health := range []string{"vipswap", "haproxy"} {
		t.Run(health, func(t *testing.T) {
			hx, sw, _, setup := startHAProxyWith(t, 2, "health: "+health, nil)
			load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 20, time.Minute)
			waitServed(t, load, 200)
			for range 2 {
				sw.Signal(t, syscall.SIGTERM)
				sw.Wait(t, 20*time.Second)
				sw = switchtest.Serve(t, setup.dir, setup.cfg)
				waitApplied(t, sw)
				waitServed(t, load, load.OK()+200)
			}
			res := load.Stop()
			t.Logf("vipswap restarted twice under 20 clients through HAProxy (%s health): %d ok, %d failed", health, res.OK, res.Failed)
			if res.Failed != 0 {
				t.Fatalf("%d failed: %v", res.Failed, res.Errors)
			}
		})
	}
}

// TestHAProxySwapWaitsForInFlight: requests in flight on the old slot in
// HAProxy when the swap is made keep its measurement from saying drained
// until they end. The first in-flight reading came before the table was
// applied, from figures up to an interval old: "drained in 0.0 s".
func TestHAProxySwapWaitsForInFlight(t *testing.T) {
	t.Parallel()
	// HAProxy's figures are read every 3 s: the swap comes between two
	// readings, and the last one saw none of the requests.
	hx, sw, apps, _ := startHAProxyWith(t, 1, "interval: 3s", nil)
	const held, hold = 10, 2 * time.Second
	done := make(chan error, held)
	launched := time.Now()
	for range held {
		go func() {
			resp, err := http.Get("http://" + hx.Prod + "/api/test?delay=" + hold.String())
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := strings.Count(apps["blue"][0].Output(), "holding a request"); n < held {
			return fmt.Errorf("blue holds %d requests, want %d", n, held)
		}
		return nil
	})
	ctx := context.Background()
	res, err := sw.Client.Swap(ctx, wire.ChangeRequest{})
	if err != nil || !res.Applied {
		t.Fatalf("swap: %+v, %v", res, err)
	}
	switched := time.Now() // the swap applied before this
	var e wire.HistoryEntry
	vstest.WaitFor(t, 30*time.Second, func() error {
		if e, err = sw.Client.Entry(ctx, res.HistoryID); err != nil {
			return err
		}
		if e.Measurement == nil {
			return errors.New("not measured yet")
		}
		return nil
	})
	for range held {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	// The requests ended no sooner than hold after they were sent, and
	// the swap applied before we saw it: the drain lasted at least the
	// difference, however long the swap took to come on a busy machine.
	least := launched.Add(hold).Sub(switched).Seconds() - 0.01
	t.Logf("with %d requests of %s in flight on blue in HAProxy, the swap measured drained in %.2f s (at least %.2f s)", held, hold, e.Measurement.DrainedSeconds, least)
	if e.Measurement.DrainedSeconds < least || !e.Measurement.Complete {
		t.Fatalf("measurement %+v: want drained only once the held requests ended (at least %.2f s after the swap)", e.Measurement, least)
	}
}

// serveManagedBehind serves vipswap with two managed instances per slot
// (run: commands allowed) driving hx through the runtime API at socket,
// HAProxy's checks the health in use, and waits until they are healthy
// and HAProxy shows the state's revision.
func serveManagedBehind(t *testing.T, hx *haproxytest.HAProxy, socket string) *switchtest.Switch {
	t.Helper()
	dir := t.TempDir()
	cfg := strings.Replace(testConfig(dir, releaseSlots(2)), "admin:\n", "admin:\n  allow_run: true\n", 1) + fmt.Sprintf(`haproxy:
  socket: %s
  maps: {prod: %s, stage: %s}
  health: haproxy
  interval: 200ms
`, socket, hx.ProdMap, hx.StageMap)
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	waitApplied(t, sw)
	return sw
}

// TestHAProxyRollingManaged (issue 15 through issue 14): a rolling update
// of managed instances while HAProxy carries the traffic and its checks
// are the health in use. A new version HAProxy's checks refuse is not
// taken for healthy on the strength of what the old process answered: the
// update stops and restores it; a good one goes through; 0 failed.
func TestHAProxyRollingManaged(t *testing.T) {
	t.Parallel()
	hx := haproxytest.Start(t, map[string][]string{"blue": nil, "green": nil}, "blue", "green")
	sw := serveManagedBehind(t, hx, hx.Socket)
	// The servers were added drained; the instances turning healthy puts
	// them in rotation without a new revision: the load starts once
	// HAProxy itself serves, or its first requests may get HAProxy's 503
	// (TestHAProxyHealthyIsNotYetServing).
	hx.WaitServing(t, "be_blue", 2)
	load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 20, 2*time.Minute)
	waitServed(t, load, 200)
	code, out := runRelease(t, sw, "rolling", "blue", "--version", "9", "--timeout", "10s", "--",
		"vipswap", "app", "--slot", "elsewhere", "--listen", "127.0.0.1:{port}")
	if code != 1 || !strings.Contains(out, `rolling failed at step "healthy`) || !strings.Contains(out, "ok     restore") {
		t.Fatalf("rolling to a version HAProxy's checks refuse: exit %d:\n%s", code, out)
	}
	code, out = runRelease(t, sw, "rolling", "blue", "--version", "1.1")
	if code != 0 {
		t.Fatalf("rolling through HAProxy: exit %d:\n%s", code, out)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + hx.Prod + "/api/test")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"version":"1.1"`) {
			return fmt.Errorf("HAProxy's prod answered %s", b)
		}
		return nil
	})
	waitServed(t, load, load.OK()+200)
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("rolling updates through HAProxy: %d ok, %d failed: %v", res.OK, res.Failed, res.Errors)
	} else {
		t.Logf("rolling updates through HAProxy (its checks the health): %d requests, 0 failed", res.OK)
	}
}

// TestHAProxyHealthyIsNotYetServing: the servers vipswap adds to HAProxy
// start drained and are put in rotation when their instances turn
// healthy, a routing change that makes no new revision. So a status that
// says every instance is healthy and HAProxy shows the current revision
// does not yet mean HAProxy serves: with HAProxy's "state ready" held
// back, a request then gets HAProxy's own 503 (as 3 requests did in
// TestHAProxyRollingManaged on a busy machine, its load started in that
// moment). haproxytest.WaitServing waits until HAProxy itself says the
// servers take requests; then a load loses none.
func TestHAProxyHealthyIsNotYetServing(t *testing.T) {
	t.Parallel()
	hx := haproxytest.Start(t, map[string][]string{"blue": nil, "green": nil}, "blue", "green")
	release := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(release) }) }
	t.Cleanup(open) // before the socket closes: no answer stays held
	sock := haproxytest.ServeSocket(t, func(cmd string) string {
		if strings.HasSuffix(strings.TrimSpace(cmd), " state ready") {
			<-release
		}
		return haproxytest.Forward(hx.Socket, cmd)
	})
	serveManagedBehind(t, hx, sock)
	resp, err := httpClient.Get("http://" + hx.Prod + "/api/test")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "No server is available") {
		t.Fatalf("HAProxy with its servers' \"state ready\" held back answered %d %q; want its own 503", resp.StatusCode, body)
	}
	open()
	hx.WaitServing(t, "be_blue", 2)
	load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 20, time.Minute)
	waitServed(t, load, 200)
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("a load started once HAProxy serves: %d ok, %d failed: %v", res.OK, res.Failed, res.Errors)
	}
}

// A rolling update stops an instance only once HAProxy shows it drained:
// with HAProxy's runtime API refusing the drain, HAProxy goes on sending
// the instance requests, and the update fails at its drain step with the
// instance untouched and no request failed.
func TestHAProxyRollingWaitsForTheDrainToShow(t *testing.T) {
	t.Parallel()
	hx := haproxytest.Start(t, map[string][]string{"blue": nil, "green": nil}, "blue", "green")
	var refuse atomic.Bool
	sock := haproxytest.ServeSocket(t, func(cmd string) string {
		if refuse.Load() && strings.HasSuffix(strings.TrimSpace(cmd), " state drain") {
			return "Permission denied.\n"
		}
		return haproxytest.Forward(hx.Socket, cmd)
	})
	sw := serveManagedBehind(t, hx, sock)
	hx.WaitServing(t, "be_blue", 2)
	load := vstest.StartLoad("http://"+hx.Prod+"/api/test", 10, 2*time.Minute)
	waitServed(t, load, 200)
	refuse.Store(true)
	code, out := runRelease(t, sw, "rolling", "blue", "--version", "1.1", "--timeout", "3s")
	if code != 1 || !strings.Contains(out, `rolling failed at step "drain`) || !strings.Contains(out, "does not show revision") || strings.Contains(out, "restart 127.0.0.1") {
		t.Fatalf("a rolling update whose drain HAProxy refused: exit %d:\n%s", code, out)
	}
	refuse.Store(false)
	waitServed(t, load, load.OK()+200)
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("with HAProxy refusing the drain: %d ok, %d failed: %v", res.OK, res.Failed, res.Errors)
	}
}

// A rolling update whose drain HAProxy never shows because its runtime API
// stopped answering altogether fails at the drain; the instance it drained
// cannot be put back while HAProxy cannot take a change (vipswap refuses
// every change then). Its error says so: no instance stays drained in
// silence.
func TestHAProxyRollingDrainFailureSaysWhatStaysDrained(t *testing.T) {
	t.Parallel()
	hx := haproxytest.Start(t, map[string][]string{"blue": nil, "green": nil}, "blue", "green")
	var armed, broken atomic.Bool
	sock := haproxytest.ServeSocket(t, func(cmd string) string {
		if strings.HasSuffix(strings.TrimSpace(cmd), " state drain") && armed.Load() {
			broken.Store(true) // from the drain on, the API answers nothing useful
		}
		if broken.Load() {
			return "Permission denied.\n"
		}
		return haproxytest.Forward(hx.Socket, cmd)
	})
	sw := serveManagedBehind(t, hx, sock)
	hx.WaitServing(t, "be_blue", 2)
	armed.Store(true)
	code, out := runRelease(t, sw, "rolling", "blue", "--version", "1.1", "--timeout", "3s")
	if code != 1 || !strings.Contains(out, `rolling failed at step "drain`) || strings.Contains(out, "restart 127.0.0.1") {
		t.Fatalf("a rolling update whose drain HAProxy never showed: exit %d:\n%s", code, out)
	}
	st, err := sw.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Slots {
		for _, i := range s.Instances {
			if i.Drained && !strings.Contains(out, i.Addr+" stays drained") {
				t.Errorf("%s/%s stays drained after the failed rolling update, and its output does not say so:\n%s", s.Name, i.Addr, out)
			}
		}
	}
}
