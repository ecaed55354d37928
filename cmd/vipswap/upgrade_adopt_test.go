//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
)

// ledgerInstance is an instance as the ledger lists it.
type ledgerInstance struct {
	Slot, Addr string
	PGID       int
	Start      uint64
}

// readLedger returns the ledger's marker and instances, by address.
func readLedger(dir string) (string, map[string]ledgerInstance, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.db.instances"))
	if err != nil {
		return "", nil, err
	}
	var f struct {
		Marker string
		Groups []ledgerInstance
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return "", nil, err
	}
	out := map[string]ledgerInstance{}
	for _, g := range f.Groups {
		out[g.Addr] = g
	}
	return f.Marker, out, nil
}

// procStart returns when pid started (clock ticks after boot), 0 if it
// is gone or a zombie.
func procStart(pid int) uint64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// waitInstances waits until the ledger (written by the process whose
// marker is not notMarker, when set) lists n instances, each running, and
// returns them and the marker.
func waitInstances(t *testing.T, dir string, n int, notMarker string) (string, map[string]ledgerInstance) {
	t.Helper()
	var marker string
	var insts map[string]ledgerInstance
	vstest.WaitFor(t, 30*time.Second, func() error {
		var err error
		if marker, insts, err = readLedger(dir); err != nil {
			return err
		}
		if notMarker != "" && marker == notMarker {
			return errors.New("the ledger is still the previous process's")
		}
		if len(insts) != n {
			return fmt.Errorf("the ledger lists %d instances, want %d", len(insts), n)
		}
		for _, i := range insts {
			if s := procStart(i.PGID); s != i.Start {
				return fmt.Errorf("instance %s (%d) does not run as recorded", i.Addr, i.PGID)
			}
		}
		return nil
	})
	return marker, insts
}

// samePIDs fails the test unless now lists the processes of before.
func samePIDs(t *testing.T, what string, before, now map[string]ledgerInstance) {
	t.Helper()
	for addr, b := range before {
		if n, ok := now[addr]; !ok || n.PGID != b.PGID || n.Start != b.Start {
			t.Fatalf("%s: instance %s is %+v, was %+v", what, addr, now[addr], b)
		}
	}
}

func pidList(insts map[string]ledgerInstance) []int {
	var out []int
	for _, i := range insts {
		out = append(out, i.PGID)
	}
	slices.Sort(out)
	return out
}

// TestUpgradeKeepsManagedInstances is the proof that managed instances
// (run:) are handed over, not restarted: 5 upgrades in a row, alternating
// two builds, under load: every instance keeps its PID, the ledger is the
// new process's after each, no request through prod fails, an instance's
// output after the last upgrade reaches the new process's log, and an
// adopted instance that crashes is restarted.
func TestUpgradeKeepsManagedInstances(t *testing.T) {
	const upgrades = 5
	dir := t.TempDir()
	bins := []string{vstest.BinaryVersion(t, dir, "upgrade-a"), vstest.BinaryVersion(t, dir, "upgrade-b")}
	switchtest.ReclaimAfter(t, dir)
	u := serveUpgradable(t, bins[0], dir, testConfig(dir, managedSlots))
	u.WaitHealthy(t)
	marker, before := waitInstances(t, dir, 4, "")
	t.Logf("instance PIDs before the upgrades: %v", pidList(before))

	load := vstest.StartLoad(u.Prod+"/api/test", 8, 5*time.Minute)
	fl := startFreshLoad(u.Prod+"/api/test", 2, 5*time.Minute)
	waitOK := func(n int64) {
		vstest.WaitFor(t, 30*time.Second, func() error {
			if load.OK() < n || fl.ok.Load() < n/10 {
				return fmt.Errorf("%d keep-alive and %d fresh answers so far", load.OK(), fl.ok.Load())
			}
			return nil
		})
	}
	waitOK(100)
	for i := range upgrades {
		old := u.pid(t)
		out, code := u.upgradeCLI(t, bins[0], "--binary", bins[(i+1)%2])
		if code != 0 {
			t.Fatalf("upgrade %d: exit %d:\n%s", i+1, code, out)
		}
		waitGone(t, old)
		var now map[string]ledgerInstance
		marker, now = waitInstances(t, dir, 4, marker)
		samePIDs(t, fmt.Sprintf("upgrade %d", i+1), before, now)
		t.Logf("after upgrade %d (process %d -> %d): instance PIDs %v", i+1, old, u.pid(t), pidList(now))
		waitOK(load.OK() + 50)
	}
	res := load.Stop()
	fok, ffailed, ferrs := fl.stop()
	t.Logf("%d upgrades: keep-alive: %d answered, %d failed; new-connection: %d answered, %d failed", upgrades, res.OK, res.Failed, fok, ffailed)
	if res.Failed != 0 || ffailed != 0 {
		t.Fatalf("failed requests across the upgrades: keep-alive %d %v, new-connection %d %v", res.Failed, res.Errors, ffailed, ferrs)
	}

	// An instance's output after the last upgrade reaches the new
	// process's log (the app logs a request that asks for a delay).
	logged, _ := os.ReadFile(u.log)
	took := strings.LastIndex(string(logged), "took over from the previous process")
	if took < 0 {
		t.Fatal("no process took over")
	}
	resp, err := http.Get(u.Prod + "/api/x?delay=7ms")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		out, _ := os.ReadFile(u.log)
		if !strings.Contains(string(out[took:]), "| app slot=blue holding a request for 7ms") {
			return errors.New("the instance's line after the last upgrade is not in the log")
		}
		return nil
	})

	// An adopted instance that crashes is restarted by the new process.
	var victim ledgerInstance
	for _, i := range before {
		if i.Slot == "blue" {
			victim = i
			break
		}
	}
	syscall.Kill(victim.PGID, syscall.SIGKILL)
	vstest.WaitFor(t, 30*time.Second, func() error {
		_, now, err := readLedger(dir)
		if err != nil {
			return err
		}
		if n, ok := now[victim.Addr]; !ok || n.PGID == victim.PGID || procStart(n.PGID) == 0 {
			return fmt.Errorf("instance %s not restarted yet: %+v", victim.Addr, now[victim.Addr])
		}
		return nil
	})
	t.Logf("crashed adopted instance %d on %s restarted", victim.PGID, victim.Addr)
	u.WaitHealthy(t)
}

// TestUpgradeToABrokenBinaryKeepsManagedInstances: an upgrade to a binary
// that exits, or never becomes ready, leaves the managed instances with
// the old process, same PIDs, under load with no failed request; the old
// process restarts one that crashes afterwards (it resumed), and a good
// upgrade after the failures still hands them over.
func TestUpgradeToABrokenBinaryKeepsManagedInstances(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)
	switchtest.ReclaimAfter(t, dir)
	u := serveUpgradable(t, bin, dir, testConfig(dir, managedSlots), "--upgrade-timeout", "3s")
	u.WaitHealthy(t)
	pid := u.pid(t)
	marker, before := waitInstances(t, dir, 4, "")
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		// It says its version and passes the configuration check, as a
		// vipswap does, and then fails to serve.
		s := "#!/bin/sh\nif [ \"$1\" = version ]; then echo \"vipswap " + name + "\"; exit 0; fi\nif [ \"$1\" = check ]; then exit 0; fi\n" + body + "\n"
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	load := vstest.StartLoad(u.Prod+"/api/test", 8, 3*time.Minute)
	for _, c := range []struct{ bin, want string }{
		{script("exits", "echo 'cannot start' >&2; exit 3"), "exited"},
		{script("hangs", "exec sleep 120"), "not ready within 3s"},
	} {
		out, code := u.upgradeCLI(t, bin, "--binary", c.bin)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Fatalf("upgrade to %s: exit %d, want 1 naming %q:\n%s", c.bin, code, c.want, out)
		}
		if got := u.pid(t); got != pid {
			t.Fatalf("the PID file names %d, not the old process %d", got, pid)
		}
		_, now := waitInstances(t, dir, 4, "")
		samePIDs(t, "after the upgrade to "+filepath.Base(c.bin), before, now)
	}
	res := load.Stop()
	t.Logf("under the failed upgrades: %d answered, %d failed; instance PIDs %v", res.OK, res.Failed, pidList(before))
	if res.Failed != 0 {
		t.Fatalf("failed requests: %d %v", res.Failed, res.Errors)
	}

	// The old process owns them still: a crash is restarted.
	var victim ledgerInstance
	for _, i := range before {
		victim = i
		break
	}
	syscall.Kill(victim.PGID, syscall.SIGKILL)
	var after map[string]ledgerInstance
	vstest.WaitFor(t, 30*time.Second, func() error {
		var err error
		if _, after, err = readLedger(dir); err != nil {
			return err
		}
		if n, ok := after[victim.Addr]; !ok || n.PGID == victim.PGID || procStart(n.PGID) != n.Start {
			return fmt.Errorf("instance %s not restarted yet", victim.Addr)
		}
		return nil
	})
	u.WaitHealthy(t)
	// And a good upgrade after the failed ones hands them over.
	out, code := u.upgradeCLI(t, bin)
	if code != 0 {
		t.Fatalf("upgrade: exit %d:\n%s", code, out)
	}
	waitGone(t, pid)
	_, now := waitInstances(t, dir, 4, marker)
	samePIDs(t, "the upgrade after the failed ones", after, now)
}

// TestUpgradeWithAHostileLedger: a ledger that names an unrelated process
// does not make the new process adopt or stop it; a truncated ledger makes
// it adopt nothing (saying why) and start the instances afresh, stopping
// the old ones it was handed, and still leaves the unrelated process alone.
func TestUpgradeWithAHostileLedger(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)
	sleeper := exec.Command("sleep", "120")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	switchtest.ReclaimAfter(t, dir)
	u := serveUpgradable(t, bin, dir, testConfig(dir, managedSlots))
	u.WaitHealthy(t)
	marker, before := waitInstances(t, dir, 4, "")
	path := filepath.Join(dir, "state.db.instances")

	// A record that names the unrelated process, with its true start time
	// and the run's marker, beside the true ones.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	sp := sleeper.Process.Pid
	f["groups"] = append(f["groups"].([]any), map[string]any{"slot": "blue", "addr": "127.0.0.1:1", "pgid": sp, "start": procStart(sp), "marker": marker, "port": 1})
	hostile, _ := json.Marshal(f)
	if err := os.WriteFile(path, hostile, 0o600); err != nil {
		t.Fatal(err)
	}
	pid := u.pid(t)
	if out, code := u.upgradeCLI(t, bin); code != 0 {
		t.Fatalf("upgrade: exit %d:\n%s", code, out)
	}
	waitGone(t, pid)
	marker, now := waitInstances(t, dir, 4, marker)
	samePIDs(t, "upgrade with a record of an unrelated process", before, now)
	if procStart(sp) == 0 {
		t.Fatal("the unrelated process was stopped")
	}

	// Truncated: nothing adopted, the instances start afresh.
	raw, _ = os.ReadFile(path)
	if err := os.WriteFile(path, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	pid = u.pid(t)
	if out, code := u.upgradeCLI(t, bin); code != 0 {
		t.Fatalf("upgrade with a truncated ledger: exit %d:\n%s", code, out)
	}
	waitGone(t, pid)
	_, fresh := waitInstances(t, dir, 4, marker)
	for addr, i := range fresh {
		if _, old := now[addr]; old {
			t.Fatalf("instance %s kept its address: adopted from a truncated ledger? %+v", addr, i)
		}
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		for _, i := range now {
			if procStart(i.PGID) == i.Start {
				return fmt.Errorf("old instance %d still runs", i.PGID)
			}
		}
		return nil
	})
	logged, _ := os.ReadFile(u.log)
	if !strings.Contains(string(logged), "cannot adopt the managed instances of the previous vipswap process") {
		t.Fatal("the new process did not say why it adopted nothing")
	}
	if procStart(sp) == 0 {
		t.Fatal("the unrelated process was stopped")
	}
	u.WaitHealthy(t)
}

// TestUpgradeWithAChangedRunBlock: a slot whose run: block changed in the
// file since the old process started (green: 1 replica instead of 2) is
// not adopted: the new process starts its instances afresh and stops the
// old ones once it serves; the unchanged slot (blue) keeps its PIDs.
func TestUpgradeWithAChangedRunBlock(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)
	switchtest.ReclaimAfter(t, dir)
	u := serveUpgradable(t, bin, dir, testConfig(dir, managedSlots))
	u.WaitHealthy(t)
	marker, before := waitInstances(t, dir, 4, "")
	changed := strings.Replace(testConfig(dir, managedSlots), "green, --listen, \"127.0.0.1:{port}\"]\n      replicas: 2", "green, --listen, \"127.0.0.1:{port}\"]\n      replicas: 1", 1)
	if changed == testConfig(dir, managedSlots) {
		t.Fatal("the configuration did not change")
	}
	if err := os.WriteFile(filepath.Join(dir, "vipswap.yaml"), []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	pid := u.pid(t)
	if out, code := u.upgradeCLI(t, bin); code != 0 {
		t.Fatalf("upgrade: exit %d:\n%s", code, out)
	}
	waitGone(t, pid)
	_, now := waitInstances(t, dir, 3, marker)
	for addr, b := range before {
		n, kept := now[addr]
		switch {
		case b.Slot == "blue" && (!kept || n.PGID != b.PGID):
			t.Fatalf("blue's instance %s was not adopted: %+v", addr, now)
		case b.Slot == "green" && kept:
			t.Fatalf("green's instance %s was adopted though its run block changed", addr)
		}
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		for _, b := range before {
			if b.Slot == "green" && procStart(b.PGID) == b.Start {
				return fmt.Errorf("green's old instance %d still runs", b.PGID)
			}
		}
		return nil
	})
	u.WaitHealthy(t)
	t.Logf("before %v, after %v", pidList(before), pidList(now))
}

// TestUpgradeFailsAfterAdopting: a real new vipswap that has adopted the
// instances and then never becomes ready (its first health round waits on
// an instance that accepts and never answers, beyond the upgrade timeout)
// leaves them with the old process: same PIDs, the ledger still the old
// one's, and the old process still restarts one that crashes.
func TestUpgradeFailsAfterAdopting(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held, never answered
		}
	}()
	t.Cleanup(func() {
		hang.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	switchtest.ReclaimAfter(t, dir)
	cfg := testConfig(dir, managedSlots)
	u := serveUpgradable(t, bin, dir, cfg, "--upgrade-timeout", "2s")
	u.WaitHealthy(t)
	pid := u.pid(t)
	marker, before := waitInstances(t, dir, 4, "")
	// The new process reads this file: a slot whose probe never ends.
	withHang := strings.Replace(cfg, "slots:\n", "slots:\n  red:\n    instances: ["+hang.Addr().String()+"]\n", 1)
	if err := os.WriteFile(filepath.Join(dir, "vipswap.yaml"), []byte(withHang), 0o600); err != nil {
		t.Fatal(err)
	}
	load := vstest.StartLoad(u.Prod+"/api/test", 4, 2*time.Minute)
	out, code := u.upgradeCLI(t, bin)
	if code != 1 || !strings.Contains(out, "not ready within 2s") {
		t.Fatalf("upgrade: exit %d, want 1 (not ready):\n%s", code, out)
	}
	logged, _ := os.ReadFile(u.log)
	if !strings.Contains(string(logged), "adopted the instances of the previous vipswap process") {
		t.Fatal("the new process adopted nothing: this tests nothing")
	}
	if got := u.pid(t); got != pid {
		t.Fatalf("the PID file names %d, not the old process %d", got, pid)
	}
	now, after := waitInstances(t, dir, 4, "")
	if now != marker {
		t.Fatalf("the ledger's marker is %s, not the old process's %s", now, marker)
	}
	samePIDs(t, "after the failed upgrade", before, after)
	res := load.Stop()
	if res.Failed != 0 {
		t.Fatalf("failed requests: %d %v", res.Failed, res.Errors)
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(dir, "state.db.instances.next")); !os.IsNotExist(err) {
			return fmt.Errorf("the failed process's ledger aside is still there: %v", err)
		}
		return nil
	})
	var victim ledgerInstance
	for _, i := range before {
		victim = i
		break
	}
	syscall.Kill(victim.PGID, syscall.SIGKILL)
	vstest.WaitFor(t, 30*time.Second, func() error {
		_, l, err := readLedger(dir)
		if err != nil {
			return err
		}
		if n, ok := l[victim.Addr]; !ok || n.PGID == victim.PGID || procStart(n.PGID) != n.Start {
			return fmt.Errorf("instance %s not restarted yet", victim.Addr)
		}
		return nil
	})
	t.Logf("instances %v stayed with process %d through an upgrade whose new process adopted them and was not ready; %d requests answered, 0 failed",
		pidList(before), pid, res.OK)
}
