package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// writeConfig replaces the configuration file of a switch started by
// switchtest.Serve in dir.
func writeConfig(t *testing.T, dir, config string) string {
	t.Helper()
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// members returns each slot's instance addresses.
func members(t *testing.T, sw *switchtest.Switch) map[string][]string {
	t.Helper()
	st, err := sw.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, s := range st.Slots {
		for _, i := range s.Instances {
			out[s.Name] = append(out[s.Name], i.Addr)
		}
	}
	return out
}

// TestReloadUnderLoad (issue 16, point 2): under 200 concurrent clients the
// configuration is reloaded (SIGHUP, then vipswap reload) to add and remove
// instances and change health settings: no request fails. An invalid file
// and a change that needs a restart are refused and change nothing; every
// reload is in the history.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	apps, addrs := startStatic(t, 2)
	extra := vstest.StartApp(t, "blue", "127.0.0.1:0")
	base := func(blue []string, interval string) string {
		cfg := testConfig(dir, staticSlots(map[string][]string{"blue": blue, "green": addrs["green"]}))
		return strings.Replace(cfg, "interval: 100ms", "interval: "+interval, 1)
	}
	sw := switchtest.Serve(t, dir, base(addrs["blue"], "100ms"))
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 200, 2*time.Minute)
	waitServed(t, load, 1000)

	// 1. SIGHUP: add an instance, remove one, slow the probes.
	removed := apps["blue"][0]
	next := []string{addrs["blue"][1], extra.Addr}
	writeConfig(t, dir, base(next, "150ms"))
	sw.Signal(t, syscall.SIGHUP)
	vstest.WaitFor(t, 10*time.Second, func() error {
		if got := members(t, sw)["blue"]; !slices.Equal(got, next) {
			return fmt.Errorf("blue has %v, want %v", got, next)
		}
		return nil
	})
	waitInstance(t, sw, extra.Addr, true)
	// The removed instance is out of the routing table: stopping it now
	// must not fail a request.
	removed.Signal(t, syscall.SIGKILL)
	removed.Wait(t, 10*time.Second)
	before := instanceServed(t, sw, extra.Addr)
	waitServed(t, load, load.OK()+2000)
	if instanceServed(t, sw, extra.Addr) <= before {
		t.Fatal("the added instance takes no traffic")
	}

	// 2. vipswap reload: an invalid file is refused and changes nothing.
	writeConfig(t, dir, base(next, "150ms")+"\nhealth:\n  rise: 0\n")
	code, out := cli(t, sw, "reload", "--reason", "broken on purpose")
	if code != 1 || !strings.Contains(out, "unchanged") {
		t.Fatalf("reload of an invalid file: exit %d:\n%s", code, out)
	}
	// 3. ... and so is a change that needs a restart.
	writeConfig(t, dir, strings.Replace(base(next, "150ms"), "prod: 127.0.0.1:0", "prod: 127.0.0.1:1", 1))
	code, out = cli(t, sw, "reload")
	if code != 1 || !strings.Contains(out, "need a restart") || !strings.Contains(out, "listeners.prod") {
		t.Fatalf("reload of a new listen address: exit %d:\n%s", code, out)
	}
	if got := members(t, sw)["blue"]; !slices.Equal(got, next) {
		t.Fatalf("a refused reload changed blue to %v", got)
	}
	// 4. A dry run says what would change; a real one brings the first
	// instance's address back (a new process there).
	back := vstest.StartApp(t, "blue", removed.Addr)
	final := []string{addrs["blue"][1], extra.Addr, back.Addr}
	writeConfig(t, dir, base(final, "100ms"))
	code, out = cli(t, sw, "reload", "--dry-run")
	if code != 0 || !strings.Contains(out, "would change") || !strings.Contains(out, "+"+back.Addr) {
		t.Fatalf("reload --dry-run: exit %d:\n%s", code, out)
	}
	code, out = cli(t, sw, "reload", "--reason", "back to three")
	if code != 0 || !strings.Contains(out, "health.interval: 150ms → 100ms") {
		t.Fatalf("reload: exit %d:\n%s", code, out)
	}
	waitInstance(t, sw, back.Addr, true)
	waitServed(t, load, load.OK()+1000)

	res := load.Stop()
	t.Logf("%d requests ok, %d failed", res.OK, res.Failed)
	if res.Failed != 0 {
		t.Fatalf("%d requests failed, want 0; first: %v", res.Failed, res.Errors)
	}
	h, err := sw.Client.History(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	var reloads []string
	for _, e := range h {
		if e.Operation == "reload" {
			reloads = append(reloads, fmt.Sprintf("%s %s %s", e.Actor, e.Result, e.Reason))
		}
	}
	want := []string{"local applied back to three", "local refused ", "local refused broken on purpose", "SIGHUP applied "}
	if !slices.Equal(reloads, want) {
		t.Fatalf("reloads in the history (newest first): %q, want %q", reloads, want)
	}
}

// TestCheck (issue 16, point 2): vipswap check validates a file without
// starting anything: exit 0 and a summary, or exit 1 and every problem.
func TestCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := writeConfig(t, dir, testConfig(dir, managedSlots))
	p := vstest.Start(t, vstest.Binary(t), "check", "-c", good)
	if code := p.Wait(t, 30*time.Second); code != 0 || !strings.Contains(p.Output(), "valid") || !strings.Contains(p.Output(), "blue (2 managed instances)") {
		t.Fatalf("check of a good file: exit %d:\n%s", code, p.Output())
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listeners:\n  prod: nowhere\nhealth:\n  rise: 0\nslots:\n  blue:\n    instances: [127.0.0.1:1]\n"), 0o600)
	p = vstest.Start(t, vstest.Binary(t), "check", "--config", bad)
	code := p.Wait(t, 30*time.Second)
	out := p.Output()
	for _, want := range []string{"bad.yaml:2: listeners.prod: invalid address", "bad.yaml:4: health.rise: must be at least 1", "slots: need at least two slots"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q", want)
		}
	}
	if code != 1 {
		t.Fatalf("check of a bad file: exit %d, want 1:\n%s", code, out)
	}
}

// TestReloadRereadsTokens: a reload re-reads admin.token_file, so a
// rotated or revoked token takes effect without a restart.
func TestReloadRereadsTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("ci old-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(testConfig(dir, staticSlots(addrs)), "  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  token_file: "+tokens+"\n", 1)
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	ctx := context.Background()
	old := client.New(sw.Admin, client.WithToken("old-secret-0123456789"))
	rotated := client.New(sw.Admin, client.WithToken("new-secret-0123456789"))
	if _, err := rotated.Swap(ctx, wire.ChangeRequest{DryRun: true}); err == nil {
		t.Fatal("the new token was accepted before the reload")
	}
	if err := os.WriteFile(tokens, []byte("deploy new-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := old.Reload(ctx, wire.ChangeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(res.Changes, " "), "admin.token_file: tokens re-read (deploy)") {
		t.Fatalf("reload changes %q do not mention the tokens", res.Changes)
	}
	if _, err := old.Swap(ctx, wire.ChangeRequest{DryRun: true}); err == nil {
		t.Fatal("the revoked token still works after the reload")
	}
	if _, err := rotated.Swap(ctx, wire.ChangeRequest{DryRun: true}); err != nil {
		t.Fatalf("the new token is refused after the reload: %v", err)
	}
	// A token file that went bad is refused; the tokens in force stay.
	if err := os.Chmod(tokens, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.Reload(ctx, wire.ChangeRequest{}); err == nil || !strings.Contains(err.Error(), "too open") {
		t.Fatalf("reload with a world-readable token file: %v, want a refusal naming the permissions", err)
	}
	if _, err := rotated.Swap(ctx, wire.ChangeRequest{DryRun: true}); err != nil {
		t.Fatalf("the token in force stopped working after a refused reload: %v", err)
	}
}

// TestReloadWarnsOfAnEmptiedSlot: a reload that leaves the stage slot,
// which takes no prod traffic, with none of its routable instances (a
// port typo) is applied and says so, dry run included. (The active slot's
// is refused: TestReloadRefusesToEmptyProd.)
func TestReloadWarnsOfAnEmptiedSlot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	typo := map[string][]string{"blue": addrs["blue"], "green": {refusedAddr(t)}}
	if err := os.WriteFile(filepath.Join(dir, "vipswap.yaml"), []byte(testConfig(dir, staticSlots(typo))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"reload", "--dry-run"}, {"reload"}} {
		code, out := cli(t, sw, args...)
		if code != 0 || !strings.Contains(out, "warning: slots.green takes traffic and keeps none of its 1 routable instances") {
			t.Fatalf("vipswap %s: exit %d:\n%s\nwant a warning that green keeps no routable instance", strings.Join(args, " "), code, out)
		}
	}
}
