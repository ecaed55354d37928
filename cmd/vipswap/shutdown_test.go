package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/launch"
)

// shellSlots is a slots: section whose run: commands wrap the sample app in
// a shell that does not exec it (the "; true" keeps the shell), so each
// instance is the shell's child, not vipswap's. script, if set, replaces
// the part after the app.
func shellSlots(t *testing.T, stopTimeout, after string) string {
	bin := vstest.Binary(t)
	var b strings.Builder
	b.WriteString("slots:\n")
	for _, slot := range []string{"blue", "green"} {
		fmt.Fprintf(&b, "  %s:\n    run:\n      command: [sh, -c, \"%s app --slot %s --listen 127.0.0.1:{port}; %s\"]\n      replicas: 2\n      stop_timeout: %s\n",
			slot, bin, slot, after, stopTimeout)
	}
	return b.String()
}

// reclaimAfter makes sure no instance of a vipswap using dir outlives the
// test: the harness stops vipswap with SIGKILL, which shell-wrapped apps
// survive, so the cleanup stops what the instance ledger still lists, as
// the next vipswap would. Call it before starting vipswap: cleanups run
// last-registered first.
func reclaimAfter(t *testing.T, dir string) {
	t.Cleanup(func() {
		l, err := launch.OpenLedger(filepath.Join(dir, "state.db.instances"), slog.New(slog.DiscardHandler))
		if err == nil {
			_, err = l.Reclaim(5 * time.Second)
		}
		if err != nil {
			t.Errorf("stopping leftover instances: %v", err)
		}
	})
}

// ledgerGroups waits until the instance ledger next to the state file in
// dir lists n process groups (each is recorded just after it starts), and
// returns them.
func ledgerGroups(t *testing.T, dir string, n int) []int {
	t.Helper()
	var g []int
	vstest.WaitFor(t, 10*time.Second, func() error {
		g = nil
		data, err := os.ReadFile(filepath.Join(dir, "state.db.instances"))
		if err != nil {
			return err
		}
		var f struct{ Groups []struct{ PGID int } }
		if err := json.Unmarshal(data, &f); err != nil {
			return err
		}
		for _, r := range f.Groups {
			g = append(g, r.PGID)
		}
		if len(g) != n {
			return fmt.Errorf("the ledger lists %d groups, want %d", len(g), n)
		}
		return nil
	})
	return g
}

// alive returns the running processes (zombies excluded) of the groups.
func alive(groups []int) []int {
	in := make(map[int]bool)
	for _, g := range groups {
		in[g] = true
	}
	var pids []int
	names, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
		pgid, _ := strconv.Atoi(string(f[2]))
		if in[pgid] && string(f[0]) != "Z" {
			pid, _ := strconv.Atoi(strings.Split(n, "/")[2])
			pids = append(pids, pid)
		}
	}
	return pids
}

// accepting returns the addresses that still accept connections.
func accepting(addrs []string) []string {
	var up []string
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			up = append(up, a)
		}
	}
	return up
}

func instanceAddrs(t *testing.T, sw *switchtest.Switch) []string {
	t.Helper()
	st, err := sw.Client.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, s := range st.Slots {
		for _, i := range s.Instances {
			addrs = append(addrs, i.Addr)
		}
	}
	return addrs
}

// TestShutdownWithShellWrappedInstances is the proof that shutdown always
// finishes: run: commands that wrap the app in sh -c without exec get
// healthy (their address is run.address, not guessed from the shell
// string), and SIGTERM stops vipswap within the stop timeout with no
// instance left. Before, the instances were never healthy, and SIGTERM
// hung forever on the pipe the orphaned apps held.
func TestShutdownWithShellWrappedInstances(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reclaimAfter(t, dir)
	sw := switchtest.Serve(t, dir, testConfig(dir, shellSlots(t, "3s", "true")))
	sw.WaitHealthy(t)
	addrs := instanceAddrs(t, sw)
	groups := ledgerGroups(t, dir, 4)
	if len(addrs) != 4 || len(alive(groups)) != 8 {
		t.Fatalf("instances %v, groups %v with %d processes; want 4 instances, each a shell and an app", addrs, groups, len(alive(groups)))
	}
	start := time.Now()
	sw.Signal(t, syscall.SIGTERM)
	if code := sw.Wait(t, 3*time.Second+10*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	if left := alive(groups); len(left) != 0 {
		t.Fatalf("processes %v of the instances' groups outlived vipswap", left)
	}
	if up := accepting(addrs); len(up) != 0 {
		t.Fatalf("%v still accept connections", up)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.db.instances")); !os.IsNotExist(err) {
		t.Fatalf("the instance ledger outlived a clean stop: %v", err)
	}
}

// TestSecondSignalForcesExit: when instances will not stop (their shell
// ignores SIGTERM and sleeps after the app), the first SIGTERM waits for
// the stop timeout, and a second one makes vipswap kill them and exit at
// once. Before, the second signal did nothing.
func TestSecondSignalForcesExit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reclaimAfter(t, dir)
	slots := strings.ReplaceAll(shellSlots(t, "60s", "sleep 600"), `[sh, -c, "`, `[sh, -c, "trap '' TERM; `)
	sw := switchtest.Serve(t, dir, testConfig(dir, slots))
	sw.WaitHealthy(t)
	groups := ledgerGroups(t, dir, 4)
	sw.Signal(t, syscall.SIGTERM)
	sw.WaitLine(t, regexp.MustCompile(`msg="shutting down`), 10*time.Second)
	start := time.Now()
	sw.Signal(t, syscall.SIGTERM)
	if code := sw.Wait(t, 10*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	t.Logf("the second signal stopped vipswap %s after it was sent", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(sw.Output(), "second signal: stopping at once") {
		t.Fatalf("no word of the forced stop:\n%s", sw.Output())
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if left := alive(groups); len(left) != 0 {
			return fmt.Errorf("processes %v of the instances' groups outlived vipswap", left)
		}
		return nil
	})
}

// TestKillNineLeavesNoInstances: kill -9 of vipswap leaves its instances
// running (none has Pdeathsig: an upgrade hands them to the next vipswap
// process), and the next start finds and stops them, those behind a shell
// too, before starting its own. Before the ledger, every crash left the
// shell-wrapped apps serving forever.
func TestKillNineLeavesNoInstances(t *testing.T) {
	t.Parallel()
	t.Run("the next start stops the direct children", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := testConfig(dir, managedSlots)
		sw := switchtest.Serve(t, dir, cfg)
		sw.WaitHealthy(t)
		groups := ledgerGroups(t, dir, 4)
		sw.Signal(t, syscall.SIGKILL)
		sw.Wait(t, 10*time.Second)
		if n := len(alive(groups)); n != 4 {
			t.Fatalf("%d instances outlived vipswap, want the 4 (else this tests nothing)", n)
		}
		again := switchtest.Serve(t, dir, cfg)
		if n := strings.Count(again.Output(), "stopping an instance a previous vipswap run left running"); n != 4 {
			t.Fatalf("%d leftovers reported, want 4:\n%s", n, again.Output())
		}
		if left := alive(groups); len(left) != 0 {
			t.Fatalf("leftovers %v still run after the next start", left)
		}
		again.WaitHealthy(t)
	})
	t.Run("the next start stops what a shell kept alive", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		reclaimAfter(t, dir)
		cfg := testConfig(dir, shellSlots(t, "3s", "true"))
		sw := switchtest.Serve(t, dir, cfg)
		sw.WaitHealthy(t)
		addrs := instanceAddrs(t, sw)
		groups := ledgerGroups(t, dir, 4)
		sw.Signal(t, syscall.SIGKILL)
		sw.Wait(t, 10*time.Second)
		// The shells and the apps, their children, outlive vipswap.
		if n := len(alive(groups)); n != 8 {
			t.Fatalf("%d processes left in the groups, want the 4 shells and 4 apps", n)
		}
		if up := accepting(addrs); len(up) != 4 {
			t.Fatalf("orphans accepting: %v, want all 4 (else this tests nothing)", up)
		}

		again := switchtest.Serve(t, dir, cfg)
		if n := strings.Count(again.Output(), "stopping an instance a previous vipswap run left running"); n != 8 {
			t.Fatalf("%d leftovers reported, want 8:\n%s", n, again.Output())
		}
		if left := alive(groups); len(left) != 0 {
			t.Fatalf("leftovers %v still run after the next start", left)
		}
		again.WaitHealthy(t)
		stop(t, again.Process)
	})
}

// TestSignalsWhileStarting (attack on issue 10): signals are heeded from
// the start. With a token file that never finishes reading (a FIFO
// nobody writes), a second SIGTERM still stops vipswap at once.
func TestSignalsWhileStarting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	fifo := filepath.Join(dir, "tokens")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(testConfig(dir, staticSlots(addrs)), "  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  token_file: "+fifo+"\n", 1) +
		"log:\n  level: debug\n" // for the "starting" line to wait on
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := vstest.Start(t, vstest.Binary(t), "serve", "-c", path)
	p.WaitLine(t, regexp.MustCompile(`msg=starting`), 30*time.Second) // its signal handlers are in place by then
	p.Signal(t, syscall.SIGTERM)
	p.WaitLine(t, regexp.MustCompile(`msg="stopping: terminated received`), 10*time.Second) // two at once would merge into one
	p.Signal(t, syscall.SIGTERM)
	if code := p.Wait(t, 10*time.Second); code != exitFailed {
		t.Fatalf("exit %d after two SIGTERMs while reading the token file, want %d", code, exitFailed)
	}
}
