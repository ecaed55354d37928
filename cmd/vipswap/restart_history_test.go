package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/wire"
)

// restartEntries returns the history's restart entries, newest first.
func restartEntries(t *testing.T, u *upgradeSwitch) []wire.HistoryEntry {
	t.Helper()
	h, err := u.Client.History(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []wire.HistoryEntry
	for _, e := range h {
		if e.Operation == "restart" {
			out = append(out, e)
		}
	}
	return out
}

// TestRestartIsAHistoryEntry: every restart is a history entry, as every
// upgrade is: the two versions and PIDs and how long the new process took
// to serve; after a graceful stop, what the old process served and failed
// while it finished its requests (a measurement); after kill -9, that it
// ended without stopping. The first start is no restart, and a process
// that took over by an upgrade is the one the next restart names.
func TestRestartIsAHistoryEntry(t *testing.T) {
	dir := t.TempDir()
	binA, binB := vstest.BinaryVersion(t, dir, "restart-a"), vstest.BinaryVersion(t, dir, "restart-b")
	_, addrs := startStatic(t, 1)
	config := testConfig(dir, staticSlots(addrs))

	u := serveUpgradable(t, binA, dir, config)
	u.WaitHealthy(t)
	pid1 := u.pid(t)
	if got := restartEntries(t, u); len(got) != 0 {
		t.Fatalf("the first start is recorded as a restart: %+v", got)
	}
	// Some traffic, then a graceful stop and a start of the other build.
	load := vstest.StartLoad(u.Prod+"/api/test", 2, time.Minute)
	vstest.WaitFor(t, 30*time.Second, func() error {
		if load.OK() < 20 {
			return fmt.Errorf("%d answers so far", load.OK())
		}
		return nil
	})
	load.Stop()
	syscall.Kill(pid1, syscall.SIGTERM)
	<-u.firstExited

	u = serveUpgradable(t, binB, dir, config)
	pid2 := u.pid(t)
	var e wire.HistoryEntry
	vstest.WaitFor(t, 30*time.Second, func() error {
		got := restartEntries(t, u)
		if len(got) != 1 {
			return fmt.Errorf("%d restart entries, want 1", len(got))
		}
		e = got[0]
		if e.Measurement == nil {
			// Recorded first, measured next: two writes.
			return fmt.Errorf("restart entry %d has no measurement yet", e.ID)
		}
		return nil
	})
	if e.Result != "applied" || len(e.Changes) != 3 || e.Changes[0] != "vipswap restart-a -> restart-b" ||
		!strings.HasPrefix(e.Changes[1], fmt.Sprintf("process %d -> %d, serving ", pid1, pid2)) ||
		!strings.Contains(e.Changes[2], "stopped gracefully") || e.Measurement == nil || !e.Measurement.Complete || e.Measurement.Failed != 0 {
		t.Fatalf("the restart after a graceful stop: %+v (measurement %+v)", e, e.Measurement)
	}
	t.Logf("restart entry %d: %s", e.ID, strings.Join(e.Changes, "; "))

	// An upgrade, then kill -9 of the process that took over: the next
	// start names that one, and says it ended without stopping.
	u.WaitHealthy(t)
	if out, code := u.upgradeCLI(t, binB, "--binary", binA); code != 0 {
		t.Fatalf("upgrade: exit %d:\n%s", code, out)
	}
	waitGone(t, pid2)
	pid3 := u.pid(t)
	syscall.Kill(pid3, syscall.SIGKILL)
	waitGone(t, pid3)

	u = serveUpgradable(t, binB, dir, config)
	pid4 := u.pid(t)
	vstest.WaitFor(t, 30*time.Second, func() error {
		got := restartEntries(t, u)
		if len(got) != 2 {
			return fmt.Errorf("%d restart entries, want 2", len(got))
		}
		e = got[0]
		return nil
	})
	if e.Result != "applied" || len(e.Changes) != 3 || e.Changes[0] != "vipswap restart-a -> restart-b" ||
		!strings.HasPrefix(e.Changes[1], fmt.Sprintf("process %d -> %d, serving ", pid3, pid4)) ||
		!strings.Contains(e.Changes[2], "ended without stopping") || e.Measurement != nil {
		t.Fatalf("the restart after kill -9: %+v (measurement %+v)", e, e.Measurement)
	}
	t.Logf("restart entry %d: %s", e.ID, strings.Join(e.Changes, "; "))
}
