package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// routedAnswer is what one request through vipswap got.
type routedAnswer struct {
	status int
	slot   string // the sample app's slot, from its JSON
	cookie string // the affinity cookie's new value, if vipswap set one
	// cookieSlot is the slot that cookie names (the part before its
	// signature).
	cookieSlot string
	body       string
}

// get sends one GET to url with the given header and cookie (empty: none).
func get(t *testing.T, hc *http.Client, url, cookie string, header map[string]string) routedAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", "vipswap_slot="+cookie)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := routedAnswer{status: resp.StatusCode, body: string(raw)}
	var app struct{ Slot string }
	if json.Unmarshal(raw, &app) == nil {
		a.slot = app.Slot
	}
	for _, c := range resp.Cookies() {
		if c.Name == "vipswap_slot" {
			a.cookie, a.cookieSlot = c.Value, cookieSlot(c.Value)
		}
	}
	return a
}

// cookieSlot returns the slot an affinity cookie value names.
func cookieSlot(v string) string {
	slot, _, _ := strings.Cut(v, "~")
	return slot
}

func shiftTo(t *testing.T, sw *switchtest.Switch, slot string, weight float64) {
	t.Helper()
	if _, err := sw.Client.Shift(context.Background(), wire.ShiftRequest{To: slot, Weight: &weight}); err != nil {
		t.Fatalf("shift %s %g%%: %v", slot, weight, err)
	}
}

// TestVersionRoutes (issue 12): /api/1.0/ always reaches blue and
// /api/2.0/ green while prod's weights move from 0 to 100; other paths
// follow the weights; the pin header is ignored when it is not configured.
func TestVersionRoutes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	routes := "routes:\n  - path_prefix: /api/1.0/\n    slot: blue\n  - path_prefix: /api/2.0/\n    slot: green\n"
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+routes)
	sw.WaitHealthy(t)
	hc := &http.Client{}
	for _, w := range []float64{0, 25, 50, 90, 100} {
		if w > 0 {
			shiftTo(t, sw, "green", w)
		}
		others := map[string]int{}
		for i := range 40 {
			if a := get(t, hc, sw.Prod+fmt.Sprintf("/api/1.0/x%d", i), "", nil); a.status != 200 || a.slot != "blue" {
				t.Fatalf("at green %g%%: /api/1.0/ reached %q (%d), want blue", w, a.slot, a.status)
			}
			if a := get(t, hc, sw.Prod+"/api/2.0/x", "", nil); a.status != 200 || a.slot != "green" {
				t.Fatalf("at green %g%%: /api/2.0/ reached %q (%d), want green", w, a.slot, a.status)
			}
			a := get(t, hc, sw.Prod+"/api/test", "", map[string]string{"X-Vipswap-Slot": "nope"})
			if a.status != 200 {
				t.Fatalf("a pin header without pin_header configured: %d %s", a.status, a.body)
			}
			others[a.slot]++
		}
		switch w {
		case 0:
			if others["green"] != 0 {
				t.Fatalf("at green 0%%, other paths reached green %d times", others["green"])
			}
		case 100:
			if others["blue"] != 0 {
				t.Fatalf("at green 100%%, other paths reached blue %d times", others["blue"])
			}
		}
	}
	st, err := sw.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Routes) != 2 || st.Routes[0].Slot == "" {
		t.Fatalf("status routes: %+v, want the two routes", st.Routes)
	}
	if code, out := cli(t, sw, "status"); code != 0 || !strings.Contains(out, "route /api/2.0/* -> green") {
		t.Fatalf("status: exit %d:\n%s\nwant the routes", code, out)
	}

	// Routes through the API: stored, recorded, and replacing a
	// configured route that matches the same requests.
	shiftTo(t, sw, "blue", 100) // blue active again, green standby
	if code, out := cli(t, sw, "route", "set", "--path-prefix", "/api/1.0/", "--slot", "green", "--reason", "1.0 moves"); code != 0 {
		t.Fatalf("route set: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "route", "set", "--path-prefix", "/api/beta/", "--header", "X-Beta", "--value", "1", "--slot", "green"); code != 0 || !strings.Contains(out, "route /api/beta/* with X-Beta: 1 -> green") {
		t.Fatalf("route set with a header: exit %d:\n%s\nwant it confirmed with its header", code, out)
	}
	if code, out := cli(t, sw, "route", "remove", "--path-prefix", "/api/beta/"); code != 1 || !strings.Contains(out, "it has /api/beta/* with X-Beta: 1 (name its header and value too)") {
		t.Fatalf("removing a header route by its prefix alone: exit %d:\n%s\nwant a refusal naming the route there is", code, out)
	}
	for range 20 {
		if a := get(t, hc, sw.Prod+"/api/1.0/x", "", nil); a.slot != "green" {
			t.Fatalf("/api/1.0/ reached %q after the API route, want green", a.slot)
		}
		if a := get(t, hc, sw.Prod+"/api/beta/x", "", map[string]string{"X-Beta": "1"}); a.slot != "green" {
			t.Fatalf("/api/beta/ with X-Beta: 1 reached %q, want green", a.slot)
		}
		if a := get(t, hc, sw.Prod+"/api/beta/x", "", nil); a.slot != "blue" {
			t.Fatalf("/api/api/beta/ without the header reached %q, want the active blue", a.slot)
		}
	}
	if code, out := cli(t, sw, "route", "remove", "--path-prefix", "/api/2.0/"); code != 1 || !strings.Contains(out, "routes in the configuration change with it") {
		t.Fatalf("removing a configured route: exit %d:\n%s\nwant a refusal", code, out)
	}
	if code, out := cli(t, sw, "route", "set", "--path-prefix", "/x/", "--slot", "purple"); code != 1 || !strings.Contains(out, `no slot "purple"`) {
		t.Fatalf("a route to no slot: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "route", "remove", "--path-prefix", "/api/1.0/"); code != 0 {
		t.Fatalf("route remove: exit %d:\n%s", code, out)
	}
	if a := get(t, hc, sw.Prod+"/api/1.0/x", "", nil); a.slot != "blue" {
		t.Fatalf("/api/1.0/ reached %q once the API route went, want blue (the configured route)", a.slot)
	}
	h, err := sw.Client.History(context.Background(), 6)
	if err != nil {
		t.Fatal(err)
	}
	set := slices.IndexFunc(h, func(e wire.HistoryEntry) bool { return e.Operation == "route" && e.Reason == "1.0 moves" })
	if h[0].Operation != "route remove" || h[0].Result != "applied" || set < 0 || h[set].Changes[0] != "route: /api/1.0/* → green" {
		t.Fatalf("history does not record the routes set and removed: %+v", h)
	}
}

// TestPinHeader (issue 12): with affinity.pin_header, a request naming a
// slot goes there whatever the weights; an unknown slot is a 400 that says
// so.
func TestPinHeader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+"affinity:\n  pin_header: X-Vipswap-Slot\n")
	sw.WaitHealthy(t)
	hc := &http.Client{}
	for range 20 {
		if a := get(t, hc, sw.Prod+"/api/test", "", map[string]string{"X-Vipswap-Slot": "green"}); a.status != 200 || a.slot != "green" {
			t.Fatalf("pinned to green: reached %q (%d)", a.slot, a.status)
		}
		if a := get(t, hc, sw.Prod+"/api/test", "", nil); a.slot != "blue" {
			t.Fatalf("unpinned: reached %q, want the active blue", a.slot)
		}
	}
	a := get(t, hc, sw.Prod+"/api/test", "", map[string]string{"X-Vipswap-Slot": "purple"})
	if a.status != 400 || !strings.Contains(a.body, `X-Vipswap-Slot names slot "purple", which does not exist`) {
		t.Fatalf("pinned to an unknown slot: %d %q, want 400 naming it", a.status, a.body)
	}
}

// TestAffinity (issue 12): 1,000 cookie-keeping clients, each alternating
// between two vipswap processes that share nothing but the cookie format,
// keep their slot through shifts 10→25→50→90 %; new clients follow the
// weights; after an abort none reaches green and all carry a rewritten
// cookie.
func TestAffinity(t *testing.T) {
	t.Parallel()
	_, addrs := startStatic(t, 1)
	keyFile := filepath.Join(t.TempDir(), "affinity.key")
	if err := os.WriteFile(keyFile, []byte("a shared key of at least sixteen bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var sws [2]*switchtest.Switch
	for i := range sws {
		dir := t.TempDir()
		// Two vipswaps that share no state share the key that signs
		// their cookies.
		sws[i] = switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+"affinity:\n  cookie: vipswap_slot\n  max_age: 1h\n  key_file: "+keyFile+"\n")
		sws[i].WaitHealthy(t)
	}
	shiftBoth := func(w float64) {
		for _, sw := range sws {
			shiftTo(t, sw, "green", w)
		}
	}
	const clients = 1000
	cookies := make([]string, clients)
	var mu sync.Mutex // guards the failures below
	var failures []string
	// round sends one request per client, half of them through each
	// vipswap, from 8 goroutines, and calls check on each routedAnswer.
	round := func(check func(i int, a routedAnswer) string) {
		var wg sync.WaitGroup
		hcs := [2]*http.Client{{}, {}}
		for g := range 8 {
			wg.Go(func() {
				for i := g; i < clients; i += 8 {
					n := i % 2
					a := get(t, hcs[n], sws[n].Prod+"/api/test", cookies[i], nil)
					if msg := check(i, a); msg != "" {
						mu.Lock()
						failures = append(failures, msg)
						mu.Unlock()
					}
					if a.cookie != "" {
						cookies[i] = a.cookie
					}
				}
			})
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%d answers wrong, first: %s", len(failures), failures[0])
		}
	}
	share := func(want float64) {
		t.Helper()
		green := 0
		for _, c := range cookies {
			if cookieSlot(c) == "green" {
				green++
			}
		}
		if got := float64(green) / clients; math.Abs(got-want) > 0.02 {
			t.Fatalf("%.1f%% of new clients on green, want %.0f%% ± 2%%", got*100, want*100)
		}
	}

	shiftBoth(10)
	round(func(i int, a routedAnswer) string {
		if a.status != 200 || a.cookie == "" || a.cookieSlot != a.slot {
			return fmt.Sprintf("client %d without a cookie: %d, slot %q, cookie %q", i, a.status, a.slot, a.cookie)
		}
		return ""
	})
	share(0.10)
	kept := append([]string(nil), cookies...)
	for _, w := range []float64{25, 50, 90} {
		shiftBoth(w)
		round(func(i int, a routedAnswer) string {
			if a.status != 200 || a.slot != cookieSlot(kept[i]) || a.cookie != "" {
				return fmt.Sprintf("at %g%%, client %d with cookie %q reached %q (status %d, new cookie %q)", w, i, kept[i], a.slot, a.status, a.cookie)
			}
			return ""
		})
	}
	// New clients follow the weights: 90 % green now.
	cookies = make([]string, clients)
	round(func(i int, a routedAnswer) string {
		if a.status != 200 || a.cookieSlot != a.slot {
			return fmt.Sprintf("new client %d: %d, slot %q, cookie %q", i, a.status, a.slot, a.cookie)
		}
		return ""
	})
	share(0.90)
	for _, sw := range sws {
		if _, err := sw.Client.Abort(context.Background(), wire.ChangeRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	round(func(i int, a routedAnswer) string {
		if a.status != 200 || a.slot != "blue" {
			return fmt.Sprintf("after the abort client %d (cookie %q) reached %q (%d)", i, cookies[i], a.slot, a.status)
		}
		if cookieSlot(cookies[i]) == "green" && a.cookieSlot != "blue" {
			return fmt.Sprintf("after the abort client %d kept cookie green (new cookie %q)", i, a.cookie)
		}
		return ""
	})
	for i, c := range cookies {
		if cookieSlot(c) != "blue" {
			t.Fatalf("after the abort client %d carries cookie %q, want blue", i, c)
		}
	}
}

// TestReleaseUnits (issue 12): start with two slots, add a third at
// runtime, roll out to it, remove the first (refused while it takes
// traffic, accepted once stage follows another slot and it is quiet), with
// no failed request under 200 concurrent clients; a kill -9 and restart
// keeps all of it.
func TestReleaseUnits(t *testing.T) {
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 2), "green": startApps(t, "green", 1)}
	red := startApps(t, "red", 2)
	cfg := testConfig(dir, staticSlots(addrs)) + fastAnalysis
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	ctx := context.Background()
	load := vstest.StartLoad(sw.Prod+"/api/test", 200, 3*time.Minute)
	defer load.Stop()
	waitServed(t, load, 1000)

	must := func(args ...string) string {
		t.Helper()
		code, out := cli(t, sw, args...)
		if code != 0 {
			t.Fatalf("vipswap %s: exit %d:\n%s", strings.Join(args, " "), code, out)
		}
		return out
	}
	refused := func(want string, args ...string) {
		t.Helper()
		code, out := cli(t, sw, args...)
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("vipswap %s: exit %d:\n%s\nwant a refusal saying %q", strings.Join(args, " "), code, out, want)
		}
	}
	refused(`slot add refused: slot "green" exists`, "slot", "add", "green", "--instances", red[0])
	must("slot", "add", "red", "--instances", strings.Join(red, ","), "--version", "3.0")
	sw.WaitHealthy(t)
	// Adding a slot moves no traffic: the history does not say blue→red.
	if out := must("history", "--limit", "1"); !regexp.MustCompile(`slot add\s+red\s`).MatchString(out) || strings.Contains(out, "→red") {
		t.Fatalf("history after slot add:\n%s", out)
	}
	refused("blue is the active slot", "slot", "remove", "blue")
	must("rollout", "start", "--to", "red", "--steps", "20,50,100", "--interval", "1s")
	vstest.WaitFor(t, 30*time.Second, func() error {
		if st := rolloutStatus(t, sw); st.Running || st.Weights["red"] != 100 {
			return fmt.Errorf("rollout running %v, weights %v", st.Running, st.Weights)
		}
		return nil
	})
	refused("blue is the standby slot", "slot", "remove", "blue")
	must("stage", "green")
	for _, args := range [][]string{{"--quiet", "1s"}, {"--wait", "--quiet", "5s", "--timeout", "5s"}} {
		if code, out := cli(t, sw, append([]string{"slot", "remove", "blue"}, args...)...); code != 2 || !strings.Contains(out, "--") {
			t.Fatalf("slot remove blue %v: exit %d:\n%s\nwant a usage error", args, code, out)
		}
	}
	out := must("slot", "remove", "blue", "--wait", "--quiet", "1s", "--timeout", "30s")
	if !strings.Contains(out, "blue is quiet: its last request ended about") || !strings.Contains(out, "removed slot blue") {
		t.Fatalf("slot remove --wait:\n%s", out)
	}
	waitServed(t, load, load.OK()+2000)
	res := load.Stop()
	if res.Failed != 0 || res.BySlot["red"] == 0 {
		t.Fatalf("%d ok, %d failed, by slot %v; want 0 failed and red serving", res.OK, res.Failed, res.BySlot)
	}
	t.Logf("through add, rollout, stage and remove: %d requests, %d failed, by slot %v", res.OK, res.Failed, res.BySlot)

	sw.Signal(t, syscall.SIGKILL)
	sw.Wait(t, 10*time.Second)
	sw2 := switchtest.Serve(t, dir, cfg)
	sw2.WaitHealthy(t)
	st, err := sw2.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range st.Slots {
		names = append(names, s.Name)
	}
	if st.Active != "red" || st.Standby != "green" || strings.Join(names, ",") != "green,red" || st.Slots[1].Version != "3.0" {
		t.Fatalf("after kill -9 and restart: active %s, standby %s, slots %v; want red, green and blue gone", st.Active, st.Standby, names)
	}
	for range 20 {
		if a := get(t, http.DefaultClient, sw2.Prod+"/api/test", "", nil); a.status != 200 || a.slot != "red" {
			t.Fatalf("after the restart prod reached %q (%d), want red", a.slot, a.status)
		}
	}
}

// TestRemovingAManagedSlot: removing a run: slot at runtime stops its
// instances, and a restart does not start them again.
func TestRemovingAManagedSlot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := fmt.Sprintf("red-%d", time.Now().UnixNano())
	slots := managedSlots + fmt.Sprintf("  red:\n    run:\n      command: [vipswap, app, --slot, red, --version, %s, --listen, \"127.0.0.1:{port}\"]\n", marker)
	cfg := testConfig(dir, slots)
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	running := func() int { return processesMatching(marker) }
	if running() != 1 {
		t.Fatalf("%d red instances run, want 1", running())
	}
	// A route set through the API refuses the removal; --force takes the
	// route with the slot (a route to no slot would keep vipswap from
	// starting again).
	if code, out := cli(t, sw, "route", "set", "--path-prefix", "/red/", "--slot", "red"); code != 0 {
		t.Fatalf("route set: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "slot", "remove", "red"); code != 1 || !strings.Contains(out, "a route sends requests to red") {
		t.Fatalf("slot remove red with a route to it: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "slot", "remove", "red", "--force"); code != 0 || !strings.Contains(out, "warning: route /red/* to red removed with it") {
		t.Fatalf("slot remove red --force: exit %d:\n%s", code, out)
	}
	if st, _ := sw.Client.Status(context.Background()); len(st.Routes) != 0 {
		t.Fatalf("routes after the forced removal: %+v, want none", st.Routes)
	}
	vstest.WaitFor(t, 15*time.Second, func() error {
		if n := running(); n != 0 {
			return fmt.Errorf("%d red instances still run", n)
		}
		return nil
	})
	sw.Signal(t, syscall.SIGTERM)
	sw.Wait(t, 30*time.Second)
	sw2 := switchtest.Serve(t, dir, cfg)
	if n := running(); n != 0 { // not even for a moment: it is not started
		t.Fatalf("as vipswap restarted %d red instances ran; the state says red was removed", n)
	}
	sw2.WaitHealthy(t)
	if n := running(); n != 0 {
		t.Fatalf("after a restart %d red instances run; the state says red was removed", n)
	}
	st, _ := sw2.Client.Status(context.Background())
	if len(st.Slots) != 2 {
		t.Fatalf("after a restart status lists %d slots, want blue and green", len(st.Slots))
	}
}

// processesMatching counts the processes whose command line contains s.
func processesMatching(s string) int {
	dirs, _ := os.ReadDir("/proc")
	n := 0
	for _, d := range dirs {
		raw, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err == nil && strings.Contains(strings.ReplaceAll(string(raw), "\x00", " "), s) {
			n++
		}
	}
	return n
}

// TestManagedSlotAtRuntime: a slot added with --run-file has its instances
// started by vipswap, stored in the state (a restart starts them again),
// and stopped when it is removed.
func TestManagedSlotAtRuntime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := fmt.Sprintf("purple-%d", time.Now().UnixNano())
	runFile := filepath.Join(dir, "purple.yaml")
	run := fmt.Sprintf("command: [vipswap, app, --slot, purple, --version, %s, --listen, \"127.0.0.1:{port}\"]\nreplicas: 2\n", marker)
	if err := os.WriteFile(runFile, []byte(run), 0o600); err != nil {
		t.Fatal(err)
	}

	// Off by default: whoever may change the state must not thereby run
	// commands.
	closed := switchtest.Serve(t, dir, testConfig(dir, managedSlots))
	closed.WaitHealthy(t)
	if code, out := cli(t, closed, "slot", "add", "purple", "--run-file", runFile); code != 1 || !strings.Contains(out, "admin.allow_run: true") {
		t.Fatalf("slot add --run-file without admin.allow_run: exit %d:\n%s", code, out)
	}
	if n := processesMatching(marker); n != 0 {
		t.Fatalf("a refused run block started %d processes", n)
	}
	// Instances that cannot be a new slot's, and names that cannot be one.
	st, err := closed.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, prodPort, _ := net.SplitHostPort(strings.TrimPrefix(closed.Prod, "http://"))
	for _, c := range []struct{ args, want string }{
		{"none --instances 127.0.0.1:1", `slot name "none" is reserved`},
		{"BLUE --instances 127.0.0.1:1", `slot "blue" exists`},
		{"red --instances localhost:" + prodPort, "is vipswap's own listeners.prod"},
		{"red --instances " + st.Slots[0].Instances[0].Addr, "is already in slot blue"},
	} {
		if code, out := cli(t, closed, append([]string{"slot", "add"}, strings.Fields(c.args)...)...); code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("slot add %s: exit %d:\n%s\nwant %q", c.args, code, out, c.want)
		}
	}
	if st2, _ := closed.Client.Status(context.Background()); len(st2.Slots) != 2 || st2.Revision != st.Revision {
		t.Fatalf("refused adds changed the state: %+v", st2)
	}
	closed.Signal(t, syscall.SIGTERM)
	closed.Wait(t, 30*time.Second)

	cfg := strings.Replace(testConfig(dir, managedSlots), "admin:\n", "admin:\n  allow_run: true\n", 1)
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("command: [x]\nreplicas: 0\nbogus: 1\n"), 0o600)
	if code, out := cli(t, sw, "slot", "add", "purple", "--run-file", bad); code != 1 || !strings.Contains(out, "bogus") {
		t.Fatalf("slot add with a bad run file: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "slot", "add", "purple", "--run-file", runFile, "--version", "4.0"); code != 0 {
		t.Fatalf("slot add --run-file: exit %d:\n%s", code, out)
	}
	sw.WaitHealthy(t)
	check := func(sw *switchtest.Switch) {
		t.Helper()
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Slots) != 3 || st.Slots[2].Name != "purple" || len(st.Slots[2].Instances) != 2 || st.Slots[2].Version != "4.0" {
			t.Fatalf("status slots: %+v, want purple with 2 instances", st.Slots)
		}
		if n := processesMatching(marker); n != 2 {
			t.Fatalf("%d purple instances run, want 2", n)
		}
		if a := get(t, http.DefaultClient, sw.Prod+"/api/test", "", nil); a.slot != "blue" {
			t.Fatalf("prod reached %q, want blue", a.slot)
		}
	}
	check(sw)
	sw.Signal(t, syscall.SIGTERM)
	sw.Wait(t, 30*time.Second)
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := processesMatching(marker); n != 0 {
			return fmt.Errorf("%d purple instances outlived vipswap", n)
		}
		return nil
	})
	sw2 := switchtest.Serve(t, dir, cfg)
	sw2.WaitHealthy(t)
	check(sw2)
	if code, out := cli(t, sw2, "slot", "remove", "purple"); code != 0 {
		t.Fatalf("slot remove: exit %d:\n%s", code, out)
	}
	vstest.WaitFor(t, 15*time.Second, func() error {
		if n := processesMatching(marker); n != 0 {
			return fmt.Errorf("%d purple instances still run", n)
		}
		return nil
	})
}

// TestConfigRouteToARuntimeSlot: a configured route may name a slot added
// at runtime (vipswap slot add): vipswap check warns that the file does
// not list it, the reload applies it, and prod routes to it; a route to a
// slot that exists nowhere is refused, and the route in force stays.
func TestConfigRouteToARuntimeSlot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	v3 := startApps(t, "v3", 1)
	cfg := testConfig(dir, staticSlots(addrs))
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	if code, out := cli(t, sw, "slot", "add", "v3", "--instances", v3[0]); code != 0 {
		t.Fatalf("slot add: exit %d:\n%s", code, out)
	}
	path := filepath.Join(dir, "vipswap.yaml")
	write := func(slot string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(cfg+"routes:\n  - path_prefix: /api/3/\n    slot: "+slot+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("v3")
	p := vstest.Start(t, vstest.Binary(t), "check", "-c", path)
	if code := p.Wait(t, 30*time.Second); code != 0 || !strings.Contains(p.Output(), `warning: routes[0].slot: "v3" is not in this file`) {
		t.Fatalf("check: exit %d:\n%s\nwant valid, with a warning", code, p.Output())
	}
	if code, out := cli(t, sw, "reload"); code != 0 {
		t.Fatalf("reload with a route to the runtime slot v3: exit %d:\n%s", code, out)
	}
	hc := &http.Client{}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if a := get(t, hc, sw.Prod+"/api/3/x", "", nil); a.slot != "v3" {
			return fmt.Errorf("/api/3/x reached %q (%d)", a.slot, a.status)
		}
		return nil
	})
	write("v9")
	if code, out := cli(t, sw, "reload"); code != 1 || !strings.Contains(out, `routes[0].slot: no slot "v9" (have blue, green, v3)`) {
		t.Fatalf("reload with a route to no slot: exit %d:\n%s\nwant a refusal naming it", code, out)
	}
	if a := get(t, hc, sw.Prod+"/api/3/x", "", nil); a.slot != "v3" {
		t.Fatalf("after the refused reload /api/3/x reached %q, want v3 still", a.slot)
	}
}

// TestRemovedSlotKeepsItsCounts: a slot removed while a change's
// measurement window is open still counts in it, and the listener's
// totals in status do not go down when it goes.
func TestRemovedSlotKeepsItsCounts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+"measure:\n  before: 1s\n  after: 10s\n")
	sw.WaitHealthy(t)
	red := startApps(t, "red", 1, "--fail-rate", "0.5")
	if code, out := cli(t, sw, "slot", "add", "red", "--instances", red[0]); code != 0 {
		t.Fatalf("slot add: exit %d:\n%s", code, out)
	}
	vstest.WaitFor(t, 20*time.Second, func() error {
		st, _ := sw.Client.Status(context.Background())
		if s, ok := findSlot(st, "red"); !ok || s.Healthy == 0 {
			return fmt.Errorf("red not healthy yet")
		}
		return nil
	})
	load := vstest.StartLoad(sw.Prod+"/api/test", 8, time.Minute)
	defer load.Stop()
	shift, err := sw.Client.Shift(context.Background(), wire.ShiftRequest{To: "red", Weight: new(50.0)})
	if err != nil {
		t.Fatal(err)
	}
	waitServed(t, load, 400)
	res := load.Stop()
	shiftTo(t, sw, "red", 0)
	before, _ := sw.Client.Status(context.Background())
	if code, out := cli(t, sw, "slot", "remove", "red"); code != 0 {
		t.Fatalf("slot remove: exit %d:\n%s", code, out)
	}
	after, _ := sw.Client.Status(context.Background())
	if after.Listeners[0].InstanceErrors < before.Listeners[0].InstanceErrors || before.Listeners[0].InstanceErrors == 0 {
		t.Fatalf("prod's instance errors in status: %d before removing red, %d after; want them kept", before.Listeners[0].InstanceErrors, after.Listeners[0].InstanceErrors)
	}
	var e wire.HistoryEntry
	vstest.WaitFor(t, 60*time.Second, func() error {
		e, err = sw.Client.Entry(context.Background(), shift.HistoryID)
		if err != nil {
			return err
		}
		return expect(e.Measurement != nil)
	})
	t.Logf("the clients saw %d failures; the shift's measurement: %d instance errors", res.Failed, e.Measurement.InstanceErrors)
	if e.Measurement.InstanceErrors == 0 || e.Measurement.InstanceErrors > uint64(res.Failed) {
		t.Fatalf("the shift's measurement counts %d instance errors; the clients saw %d 500s from red", e.Measurement.InstanceErrors, res.Failed)
	}
}
