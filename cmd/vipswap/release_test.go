package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// releaseSlots are two managed slots whose command takes {version}, with
// fast rollout analysis. Their instances go on serving (probes included)
// after SIGTERM until SIGKILL ends them (stop_timeout), as an application
// that ignores SIGTERM does: a release must not take the old process's
// answers for the new one's.
func releaseSlots(replicas int) string {
	return fmt.Sprintf(`
slots:
  blue:
    version: "1.0"
    run:
      command: [vipswap, app, --slot, blue, --version, "{version}", --listen, "127.0.0.1:{port}", --stop-delay, 1s]
      replicas: %d
      stop_timeout: 300ms
  green:
    version: "1.0"
    run:
      command: [vipswap, app, --slot, green, --version, "{version}", --listen, "127.0.0.1:{port}", --stop-delay, 1s]
      replicas: %d
      stop_timeout: 300ms
analysis:
  window: 2s
  min_requests: 20
  max_error_rate: 0.01
`, replicas, replicas)
}

// startReleases starts vipswap with releaseSlots, commands allowed.
func startReleases(t *testing.T, replicas int) *switchtest.Switch {
	sw, _, _ := startReleasesIn(t, replicas)
	return sw
}

// startReleasesIn is startReleases that also returns the directory and
// configuration, to start vipswap again.
func startReleasesIn(t *testing.T, replicas int) (*switchtest.Switch, string, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := strings.Replace(testConfig(dir, releaseSlots(replicas)), "admin:\n", "admin:\n  allow_run: true\n", 1)
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	return sw, dir, cfg
}

// runRelease runs a release verb with --admin before any "-- COMMAND".
func runRelease(t *testing.T, sw *switchtest.Switch, args ...string) (int, string) {
	t.Helper()
	p := vstest.Start(t, vstest.Binary(t), append([]string{args[0], "--admin", sw.Admin}, args[1:]...)...)
	code := p.Wait(t, 2*time.Minute)
	return code, p.Output()
}

// answeredBy asks prod who answers: "slot version".
func answeredBy(t *testing.T, sw *switchtest.Switch) string {
	t.Helper()
	resp, err := http.Get(sw.Prod + "/api/test")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Slot, Version string }
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("prod answered %s: %s", resp.Status, b)
	}
	return v.Slot + " " + v.Version
}

// lastEntry returns the newest history entry of operation op.
func lastEntry(t *testing.T, sw *switchtest.Switch, op string) wire.HistoryEntry {
	t.Helper()
	h, err := sw.Client.History(context.Background(), 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h {
		if e.Operation == op {
			return e
		}
	}
	t.Fatalf("no %s entry in the history", op)
	return wire.HistoryEntry{}
}

func stepNames(e wire.HistoryEntry) string {
	var names []string
	for _, s := range e.Steps {
		names = append(names, s.Name+":"+s.Result)
	}
	return strings.Join(names, " ")
}

// TestDeploySwap (issue 15): a deploy to the standby under load, with a
// warm-up and a gate on stage, swaps prod to the new version with no
// failed request and records one history entry with its steps; a
// rollback within --keep is instant and fails nothing.
func TestDeploySwap(t *testing.T) {
	t.Parallel()
	sw, dir, cfg := startReleasesIn(t, 2)
	load := vstest.StartLoad(sw.Prod+"/api/test", 100, 2*time.Minute)
	waitServed(t, load, 200)
	code, out := runRelease(t, sw, "deploy", "--slot", "green", "--version", "2.0", "--warmup", "20", "--check", "/api/ping?slot=green",
		"--gate", `test "$VIPSWAP_VERSION" = 2.0 && vipswap verify --url "$VIPSWAP_STAGE_URL/api/test" --requests 100 --concurrency 5 | grep -q "green 2.0 #"`,
		"--keep", "1m", "--reason", "release 2.0")
	if code != 0 {
		t.Fatalf("deploy: exit %d:\n%s", code, out)
	}
	for _, want := range []string{"ok     start", "ok     healthy", "ok     warmup", "ok     gates", "ok     switch", "ok     drain", "succeeded", "blue stays as the standby"} {
		if !strings.Contains(out, want) {
			t.Fatalf("deploy output lacks %q:\n%s", want, out)
		}
	}
	if got := answeredBy(t, sw); got != "green 2.0" {
		t.Fatalf("prod is answered by %s after the deploy, want green 2.0", got)
	}
	if code, out := cli(t, sw, "status"); code != 0 || !strings.Contains(out, "active green (version 2.0), standby blue (version 1.0)") ||
		!regexp.MustCompile(`green\s+2\.0\s+active`).MatchString(out) || strings.Contains(out, "node ") {
		t.Fatalf("status after the deploy: exit %d:\n%s\nwant each slot's version, and no node line on a single vipswap", code, out)
	}
	e := lastEntry(t, sw, "deploy")
	if e.Result != "applied" || e.From != "blue" || e.To != "green" || e.Reason != "release 2.0" || e.Measurement == nil || e.Measurement.Served == 0 {
		t.Fatalf("deploy history entry %+v", e)
	}
	if got := stepNames(e); got != "start:ok healthy:ok warmup:ok stage:ok gates:ok switch:ok drain:ok" {
		t.Fatalf("deploy steps %s", got)
	}
	// Rollback within --keep: blue is still running, so it is instant.
	began := time.Now()
	if res, err := sw.Client.Rollback(context.Background(), wire.ChangeRequest{}); err != nil || res.To != "blue" || res.TargetRoutable != 2 {
		t.Fatalf("rollback: %+v, %v", res, err)
	}
	t.Logf("rollback answered in %s", time.Since(began).Round(time.Microsecond))
	if got := answeredBy(t, sw); got != "blue 1.0" {
		t.Fatalf("prod is answered by %s after the rollback, want blue 1.0", got)
	}
	// The deployed version is in the state: a restarted vipswap runs
	// green at 2.0, not the configuration's 1.0.
	waitServed(t, load, load.OK()+200)
	res := load.Stop()
	sw.Signal(t, syscall.SIGTERM)
	sw.Wait(t, 30*time.Second)
	sw = switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	if code, out := cli(t, sw, "swap"); code != 0 {
		t.Fatalf("swap after a restart: exit %d:\n%s", code, out)
	}
	if got := answeredBy(t, sw); got != "green 2.0" {
		t.Fatalf("after a restart, green answers as %s, want green 2.0", got)
	}
	code, out = cli(t, sw, "history")
	if code != 0 || !strings.Contains(out, "steps: start") {
		t.Fatalf("history does not show the deploy's steps: exit %d:\n%s", code, out)
	}
	if res.Failed != 0 || res.BySlot["green"] == 0 {
		t.Fatalf("under the deploy and the rollback: %d ok, %d failed (%v), by slot %v", res.OK, res.Failed, res.Errors, res.BySlot)
	}
	t.Logf("deploy and rollback under load: %d requests, 0 failed, by slot %v; deploy took %.2fs", res.OK, res.BySlot, e.Measurement.WindowSeconds)
}

// TestDeployFailuresLeaveProd (issue 15): a failing gate and an instance
// that never becomes healthy each stop the deploy before the switch, name
// the step, exit 1, and leave prod as it was.
func TestDeployFailuresLeaveProd(t *testing.T) {
	t.Parallel()
	sw := startReleases(t, 1)
	load := vstest.StartLoad(sw.Prod+"/api/test", 20, 2*time.Minute)
	waitServed(t, load, 100)
	code, out := runRelease(t, sw, "deploy", "--slot", "green", "--version", "2.0", "--gate", "echo smoke test failed; exit 3")
	if code != 1 || !strings.Contains(out, `deploy failed at step "gates"`) || !strings.Contains(out, "smoke test failed") {
		t.Fatalf("deploy with a failing gate: exit %d:\n%s", code, out)
	}
	if got := answeredBy(t, sw); got != "blue 1.0" {
		t.Fatalf("prod is answered by %s after a failed gate, want blue 1.0", got)
	}
	if e := lastEntry(t, sw, "deploy"); e.Result != "failed" || !strings.Contains(e.Error, "gates") || !strings.Contains(stepNames(e), "gates:failed") {
		t.Fatalf("failed deploy's history entry %+v", e)
	}
	// Instances that answer the probe for another slot never become
	// healthy.
	code, out = runRelease(t, sw, "deploy", "--slot", "green", "--version", "3.0", "--timeout", "10s", "--",
		"vipswap", "app", "--slot", "elsewhere", "--listen", "127.0.0.1:{port}")
	if code != 1 || !strings.Contains(out, `deploy failed at step "healthy"`) || !strings.Contains(out, "L7STS 404") {
		t.Fatalf("deploy that never becomes healthy: exit %d:\n%s", code, out)
	}
	st, _ := sw.Client.Status(context.Background())
	if st.Active != "blue" {
		t.Fatalf("active is %s after failed deploys, want blue", st.Active)
	}
	// green runs what it ran before the failed deploys.
	vstest.WaitFor(t, 10*time.Second, func() error {
		st, _ := sw.Client.Status(context.Background())
		if s, _ := findSlot(st, "green"); s.Version != "1.0" || s.Healthy != 1 {
			return fmt.Errorf("green: version %s, %d healthy; want 1.0 running again", s.Version, s.Healthy)
		}
		return nil
	})
	// A new slot whose gate fails is removed again, and stage goes back.
	code, out = runRelease(t, sw, "deploy", "--slot", "v9", "--version", "9.0", "--gate", "exit 1", "--",
		"vipswap", "app", "--slot", "v9", "--listen", "127.0.0.1:{port}")
	if code != 1 || !strings.Contains(out, `deploy failed at step "gates"`) {
		t.Fatalf("deploy of a new slot with a failing gate: exit %d:\n%s", code, out)
	}
	st, _ = sw.Client.Status(context.Background())
	if st.Standby != "green" || len(st.Slots) != 2 {
		t.Fatalf("after a failed deploy of a new slot: standby %s, %d slots; want green and the 2 configured", st.Standby, len(st.Slots))
	}
	// Refused before anything starts: a plan that does not exist, a slot
	// name that cannot be one.
	for _, args := range [][]string{
		{"deploy", "--slot", "green", "--version", "4.0", "--strategy", "rollout", "--plan", "nosuchplan"},
		{"deploy", "--slot", "../etc", "--version", "4.0"},
	} {
		before, _ := sw.Client.Status(context.Background())
		code, out := runRelease(t, sw, args...)
		after, _ := sw.Client.Status(context.Background())
		if code != 1 || strings.Contains(out, "deploy 2") || after.Revision != before.Revision {
			t.Fatalf("%v: exit %d, revision %d -> %d:\n%s", args, code, before.Revision, after.Revision, out)
		}
	}
	// A gate whose children outlive its timeout: they are killed with it.
	marker := fmt.Sprintf("%d.%d", 30+time.Now().Nanosecond()%30, time.Now().Nanosecond()%1000)
	code, out = runRelease(t, sw, "deploy", "--slot", "green", "--version", "4.0", "--timeout", "10s", "--gate", "sleep "+marker+"; true")
	if code != 1 || !strings.Contains(out, "did not finish within 10s") {
		t.Fatalf("deploy with a gate that hangs: exit %d:\n%s", code, out)
	}
	if n := processesMatching("sleep " + marker); n != 0 {
		t.Fatalf("%d of a timed-out gate's processes still run", n)
	}
	// A swap made while the gates run: the deploy does not switch prod
	// back blindly; it fails at switch and prod stays where the operator
	// put it.
	dir := t.TempDir()
	gate := fmt.Sprintf(`touch %s/running; while [ ! -e %s/go ]; do sleep 0.05; done`, dir, dir)
	p := vstest.Start(t, vstest.Binary(t), "deploy", "--admin", sw.Admin, "--slot", "green", "--version", "5.0", "--gate", gate)
	vstest.WaitFor(t, 30*time.Second, func() error {
		_, err := os.Stat(dir + "/running")
		return err
	})
	if code, out := cli(t, sw, "swap"); code != 0 {
		t.Fatalf("swap during the deploy's gates: exit %d:\n%s", code, out)
	}
	os.WriteFile(dir+"/go", nil, 0o600)
	if code := p.Wait(t, time.Minute); code != 1 || !strings.Contains(p.Output(), `deploy failed at step "switch"`) || !strings.Contains(p.Output(), "prod moved to green") {
		t.Fatalf("deploy after a swap during its gates: exit %d:\n%s", code, p.Output())
	}
	if st, _ := sw.Client.Status(context.Background()); st.Active != "green" {
		t.Fatalf("prod is on %s, want green where the operator's swap put it", st.Active)
	}
	if code, out := cli(t, sw, "swap"); code != 0 { // back to blue for what follows
		t.Fatalf("swap back: exit %d:\n%s", code, out)
	}
	// A deploy while a rollout runs is refused at its start.
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--steps", "10,100", "--interval", "10m"); code != 0 {
		t.Fatalf("rollout start: exit %d:\n%s", code, out)
	}
	code, out = runRelease(t, sw, "deploy", "--slot", "v5", "--version", "5.0", "--", "vipswap", "app", "--slot", "v5", "--listen", "127.0.0.1:{port}")
	if code != 1 || !strings.Contains(out, `deploy failed at step "start"`) || !strings.Contains(out, "a rollout to green is running") {
		t.Fatalf("deploy during a rollout: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "abort"); code != 0 {
		t.Fatalf("abort: exit %d:\n%s", code, out)
	}
	// A usage mistake changes nothing (exit 2).
	if code, out := runRelease(t, sw, "deploy", "--slot", "green"); code != 2 || !strings.Contains(out, "--version") {
		t.Fatalf("deploy without --version: exit %d:\n%s", code, out)
	}
	if code, out := runRelease(t, sw, "deploy", "--slot", "blue", "--version", "9"); code != 1 || !strings.Contains(out, "active slot") {
		t.Fatalf("deploy to the active slot: exit %d:\n%s", code, out)
	}
	res := load.Stop()
	if res.Failed != 0 {
		t.Fatalf("failed deploys cost prod %d requests: %v", res.Failed, res.Errors)
	}
}

// TestDeployRollout (issue 15): a deploy with --strategy rollout to a new
// slot under load moves prod step by step, 0 failed; a second one to
// another new slot removes the first once --keep has passed.
func TestDeployRollout(t *testing.T) {
	t.Parallel()
	sw := startReleases(t, 1)
	load := vstest.StartLoad(sw.Prod+"/api/test", 50, 2*time.Minute)
	waitServed(t, load, 100)
	app := func(slot string) []string {
		return []string{"--", "vipswap", "app", "--slot", slot, "--version", "{version}", "--listen", "127.0.0.1:{port}"}
	}
	args := append([]string{"deploy", "--slot", "v3", "--version", "3.0", "--strategy", "rollout", "--steps", "50,100", "--interval", "1s", "--keep", "1s"}, app("v3")...)
	if code, out := runRelease(t, sw, args...); code != 0 || !strings.Contains(out, "promoted") || !strings.Contains(out, "blue stays as the standby") {
		t.Fatalf("deploy --strategy rollout: exit %d:\n%s", code, out)
	}
	if got := answeredBy(t, sw); got != "v3 3.0" {
		t.Fatalf("prod is answered by %s, want v3 3.0", got)
	}
	// Long enough to send a request to the kept slot before its time is up
	// on a busy machine too.
	const keep = 10 * time.Second
	args = append([]string{"deploy", "--slot", "v4", "--version", "4.0", "--strategy", "rollout", "--steps", "100", "--interval", "1s", "--keep", keep.String(), "--json"}, app("v4")...)
	code, out := runRelease(t, sw, args...)
	var p wire.Progress
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &p) != nil || p.State != "succeeded" || p.From != "v3" || !strings.Contains(p.Kept, "v3 keeps running until") {
		t.Fatalf("second deploy --json: exit %d:\n%s", code, out)
	}
	// A request on the kept slot (stage follows it) when its time is up:
	// the teardown waits for it. Held longer than the whole keep, it is
	// still in flight then whenever it was sent.
	slow := make(chan string, 1)
	go func() {
		resp, err := http.Get(sw.Stage + "/api/test?delay=" + (keep + 2*time.Second).String())
		if err != nil {
			slow <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- resp.Status + " " + string(b)
	}()
	if got := <-slow; !strings.HasPrefix(got, "200") || !strings.Contains(got, `"slot":"v3"`) {
		t.Fatalf("a request on the kept slot at its teardown: %s", got)
	}
	vstest.WaitFor(t, 15*time.Second, func() error {
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			return err
		}
		for _, s := range st.Slots {
			if s.Name == "v3" {
				return fmt.Errorf("v3 still exists (roles: %s)", s.Role)
			}
		}
		return nil
	})
	res := load.Stop()
	if res.Failed != 0 || res.BySlot["v3"] == 0 || res.BySlot["v4"] == 0 {
		t.Fatalf("rollout deploys under load: %d ok, %d failed (%v), by slot %v", res.OK, res.Failed, res.Errors, res.BySlot)
	}
	t.Logf("two rollout deploys under load: %d requests, 0 failed, by slot %v", res.OK, res.BySlot)

	// Without traffic the analysis never judges: the deploy gives the
	// rollout its steps' intervals and --timeout, then aborts it.
	args = append([]string{"deploy", "--slot", "v5", "--version", "5.0", "--strategy", "rollout", "--steps", "50,100", "--interval", "500ms", "--timeout", "10s"}, app("v5")...)
	if code, out := runRelease(t, sw, args...); code != 1 || !strings.Contains(out, `deploy failed at step "switch"`) || !strings.Contains(out, "aborted, prod back on v4") {
		t.Fatalf("a rollout deploy that cannot be judged: exit %d:\n%s", code, out)
	}
	st, _ := sw.Client.Status(context.Background())
	if _, ok := findSlot(st, "v5"); ok || st.Active != "v4" {
		t.Fatalf("after the aborted rollout deploy: active %s, v5 still there: %v", st.Active, ok)
	}
}

// TestRolling (issue 15): a rolling update of a 3-instance slot under 200
// concurrent clients fails nothing; one whose new version never becomes
// healthy stops with the reason, restores the instance and leaves the
// slot serving.
func TestRolling(t *testing.T) {
	t.Parallel()
	sw := startReleases(t, 3)
	load := vstest.StartLoad(sw.Prod+"/api/test", 200, 3*time.Minute)
	waitServed(t, load, 300)
	code, out := runRelease(t, sw, "rolling", "blue", "--version", "1.1", "--warmup", "10")
	if code != 0 || strings.Count(out, "ok     ready") != 3 || !strings.Contains(out, "rolling") || !strings.Contains(out, "succeeded") {
		t.Fatalf("rolling: exit %d:\n%s", code, out)
	}
	st, _ := sw.Client.Status(context.Background())
	for _, s := range st.Slots {
		if s.Name == "blue" && (s.Version != "1.1" || s.Routable != 3) {
			t.Fatalf("blue after the rolling update: version %s, %d routable", s.Version, s.Routable)
		}
	}
	for range 10 {
		if got := answeredBy(t, sw); got != "blue 1.1" {
			t.Fatalf("prod answered by %s after the update, want blue 1.1", got)
		}
	}
	e := lastEntry(t, sw, "rolling")
	if e.Result != "applied" || len(e.Steps) != 3*5+1 || e.Measurement == nil {
		t.Fatalf("rolling history entry: %+v (steps %s)", e, stepNames(e))
	}
	waitServed(t, load, load.OK()+300)

	// A new version that never becomes healthy: the first instance is
	// restored, the others are not touched.
	code, out = runRelease(t, sw, "rolling", "blue", "--version", "9", "--timeout", "10s", "--",
		"vipswap", "app", "--slot", "elsewhere", "--listen", "127.0.0.1:{port}")
	if code != 1 || !strings.Contains(out, "not within 10s") || !strings.Contains(out, "ok     restore") {
		t.Fatalf("rolling to a version that never becomes healthy: exit %d:\n%s", code, out)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			return err
		}
		for _, s := range st.Slots {
			if s.Name == "blue" && (s.Version != "1.1" || s.Routable != 3) {
				return fmt.Errorf("blue: version %s, %d routable, want 1.1 and 3", s.Version, s.Routable)
			}
		}
		return nil
	})
	for range 10 {
		if got := answeredBy(t, sw); got != "blue 1.1" {
			t.Fatalf("prod answered by %s after a failed update, want blue 1.1", got)
		}
	}
	waitServed(t, load, load.OK()+300)
	res := load.Stop()
	if res.Failed != 0 {
		t.Fatalf("rolling updates under 200 clients: %d ok, %d failed: %v", res.OK, res.Failed, res.Errors)
	}
	t.Logf("rolling updates under 200 clients: %d requests, 0 failed", res.OK)
	if code, out := runRelease(t, sw, "rolling", "blue", "--max-unavailable", "3"); code != 1 || !strings.Contains(out, "at most 2") {
		t.Fatalf("rolling with every instance unavailable: exit %d:\n%s", code, out)
	}
}

// TestVerify (issue 15): vipswap verify under swaps every 500ms counts no
// failure and shows both slots answering; against a dead address it
// exits 1 naming the kind.
func TestVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	code, out := cli(t, sw, "verify", "--url", sw.Prod+"/api/test", "--concurrency", "50", "--duration", "3s", "--swap-every", "500ms")
	if code != 0 || !strings.Contains(out, " 0 failed\n") || !strings.Contains(out, "blue blue-v1 #") || !strings.Contains(out, "green green-v1 #") {
		t.Fatalf("verify --swap-every: exit %d:\n%s", code, out)
	}
	var swaps int
	fmt.Sscanf(out[strings.Index(out, "swaps: "):], "swaps: %d", &swaps)
	if swaps < 3 {
		t.Fatalf("verify swapped %d times in 3s, want at least 3:\n%s", swaps, out)
	}
	if sw.Active(t) != "blue" || (swaps%2 == 1) != strings.Contains(out, "and one after the load to put prod back on blue") {
		t.Fatalf("after verify --swap-every prod is on %s; want blue, where the run found it:\n%s", sw.Active(t), out)
	}
	// Swapping a split prod would end the shift: refused before any load.
	if code, out := cli(t, sw, "shift", "--to", "green", "--weight", "20"); code != 0 {
		t.Fatalf("shift: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "verify", "--url", sw.Prod+"/api/test", "--duration", "1s", "--swap-every", "200ms"); code != 1 || !strings.Contains(out, "prod is split (blue 80%, green 20%)") {
		t.Fatalf("verify --swap-every on a split prod: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "shift", "--to", "green", "--weight", "0"); code != 0 {
		t.Fatalf("shift back: exit %d:\n%s", code, out)
	}
	code, out = cli(t, sw, "verify", "--url", "http://"+vstest.FreeAddr(t)+"/", "--requests", "5")
	if code != 1 || !strings.Contains(out, "connect 5") || !strings.Contains(out, "5 of 5 requests failed") {
		t.Fatalf("verify against a dead address: exit %d:\n%s", code, out)
	}
	if code, out := cli(t, sw, "verify", "--url", sw.Prod); code != 2 || !strings.Contains(out, "must end") {
		t.Fatalf("verify without an end: exit %d:\n%s", code, out)
	}

	// Hostile and broken release requests: each a 4xx naming what is
	// wrong, and nothing changes.
	before, _ := sw.Client.Status(context.Background())
	for _, c := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/v1/deploy", `{"slot":"green","version":"1","replicas":-1}`, 400, "replicas"},
		{"/v1/deploy", `{"slot":"green","version":"1","bogus":1}`, 400, "bogus"},
		{"/v1/deploy", `{"slot":"green","version":"1","command":["sh","-c","id"]}`, 400, "allow_run"},
		{"/v1/deploy", `{"slot":"green","version":"1","checks":["http://elsewhere/"]}`, 400, "starting with /"},
		{"/v1/deploy", `{"slot":"green","version":"1","keep":"-5m"}`, 400, "keep"},
		{"/v1/deploy", `{"slot":"green","version":"1","warmup":1000000000}`, 400, "warmup"},
		{"/v1/deploy", `{"slot":"green","version":"1"`, 400, ""},
		{"/v1/deploy", `{"slot":"green","version":"1"}{"slot":"blue"}`, 400, ""},
		{"/v1/deploy", `{"slot":"` + strings.Repeat("x", 2<<20) + `"}`, 413, ""},
		{"/v1/deploy", `{"slot":"green","version":"1; touch /tmp/pwned"}`, 400, "version"},
		{"/v1/rolling", `{"slot":"green","version":"$(id)"}`, 400, "version"},
		{"/v1/slots", `{"name":"red","instances":["127.0.0.1:1"],"version":"a b"}`, 400, "version"},
		{"/v1/rolling", `{"slot":"green","max_unavailable":-1}`, 400, "max_unavailable"},
		{"/v1/rolling", `{"slot":"green","timeout":"1s"}`, 400, "may need 5.3s"}, // from testConfig's probes (rise, interval, 5 s timeout)
		{"/v1/rolling", `{"slot":"green"}`, 400, "run block"},
	} {
		resp, err := http.Post(sw.Admin+c.path, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var e wire.ErrorBody
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil || resp.StatusCode != c.status || e.Error == "" || !strings.Contains(e.Error, c.want) || strings.Contains(e.Error, "\n") {
			t.Errorf("POST %s %.60q: %d %q (%v); want %d naming %q on one line", c.path, c.body, resp.StatusCode, e.Error, err, c.status, c.want)
		}
	}
	resp, err := http.Get(sw.Admin + "/v1/releases/nope")
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("GET a release that does not exist: %v %v", resp, err)
	}
	after, _ := sw.Client.Status(context.Background())
	if after.Revision != before.Revision {
		t.Fatalf("refused release requests changed the state: revision %d -> %d", before.Revision, after.Revision)
	}
}

// findSlot returns slot name of st.
func findSlot(st wire.Status, name string) (wire.SlotStatus, bool) {
	for _, s := range st.Slots {
		if s.Name == name {
			return s, true
		}
	}
	return wire.SlotStatus{}, false
}

// TestReleaseReportsInstanceErrors: a release whose new version answers
// one request in ten with a 500 (below a lenient analysis bound) says so
// in its summary, its --json and its history entry, beside the requests
// vipswap failed itself (none).
func TestReleaseReportsInstanceErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := strings.Replace(testConfig(dir, releaseSlots(1)), "admin:\n", "admin:\n  allow_run: true\n", 1)
	cfg = strings.Replace(cfg, "max_error_rate: 0.01", "max_error_rate: 0.5", 1)
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 16, 2*time.Minute)
	defer load.Stop()
	waitServed(t, load, 100)
	args := []string{"deploy", "--slot", "v3", "--version", "3.0", "--strategy", "rollout", "--steps", "50,100", "--interval", "2s", "--json",
		"--", "vipswap", "app", "--slot", "v3", "--version", "{version}", "--listen", "127.0.0.1:{port}", "--fail-rate", "0.1"}
	code, out := runRelease(t, sw, args...)
	var p wire.Progress
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &p) != nil || p.State != "succeeded" {
		t.Fatalf("deploy: exit %d:\n%s", code, out)
	}
	res := load.Stop()
	t.Logf("deploy: %d requests, %d failed, %d instance errors; the clients saw %d non-200 of %d", p.Requests, p.Failed, p.InstanceErrors, res.Failed, res.OK+res.Failed)
	if p.InstanceErrors == 0 || p.InstanceErrors > uint64(res.Failed) || p.Failed != 0 {
		t.Fatalf("deploy --json: %d instance errors, %d failed; want the canary's 500s (the clients saw %d) and 0 failed", p.InstanceErrors, p.Failed, res.Failed)
	}
	e, err := sw.Client.Entry(context.Background(), p.HistoryID)
	if err != nil || e.Measurement == nil || e.Measurement.InstanceErrors != p.InstanceErrors {
		t.Fatalf("history entry %d: %+v (%v); want %d instance errors", p.HistoryID, e.Measurement, err, p.InstanceErrors)
	}
	code, out = cli(t, sw, "history", "--limit", "3")
	if want := fmt.Sprintf("0 failed, %s (5xx)", plural(int64(p.InstanceErrors), "instance error")); code != 0 || !strings.Contains(out, want) {
		t.Fatalf("history: exit %d:\n%s\nwant %q", code, out, want)
	}
}

// TestDeployOfAnUnhealthyVersion: the sample app's versions named
// *-unhealthy fail their probes, so the configured run block shows a
// deploy that never becomes healthy: it stops at "healthy", exits 1 and
// leaves prod as it was.
func TestDeployOfAnUnhealthyVersion(t *testing.T) {
	t.Parallel()
	sw := startReleases(t, 1)
	code, out := runRelease(t, sw, "deploy", "--slot", "green", "--version", "2.1-unhealthy", "--timeout", "10s")
	if code != 1 || !strings.Contains(out, `deploy failed at step "healthy"`) {
		t.Fatalf("deploy of 2.1-unhealthy: exit %d:\n%s\nwant a failure at the healthy step", code, out)
	}
	if got := answeredBy(t, sw); got != "blue 1.0" {
		t.Fatalf("prod is answered by %s after the failed deploy, want blue 1.0", got)
	}
}
