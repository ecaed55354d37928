package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// TestUpgradeOldProcessKilledMidway: the old process is killed (kill -9)
// after it started the new one and before the new one is ready. The new
// one holds the sockets and the state and is all that is left: it serves
// on (as a start after a crash would), instead of exiting on the failed
// "ready" to a parent that is gone and leaving nothing listening.
func TestUpgradeOldProcessKilledMidway(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)
	_, addrs := startStatic(t, 1)
	u := serveUpgradable(t, bin, dir, testConfig(dir, staticSlots(addrs)))
	u.WaitHealthy(t)
	old := u.pid(t)

	// The new binary: a vipswap that, when it serves, first says it was
	// started and waits until the test lets it go on. It says so only once
	// the old process has written the listeners' names to the pipe the new
	// one reads them from (fd 4; bash's "read -t 0" looks without reading):
	// the old process writes them just after starting the new one, and a
	// kill before that leaves the new one nothing to take over.
	started, goOn := filepath.Join(dir, "started"), filepath.Join(dir, "go-on")
	wrapper := filepath.Join(dir, "held-vipswap")
	script := fmt.Sprintf("#!/bin/bash\ncase \"$1\" in version|check) exec %s \"$@\";; esac\nuntil read -t 0 -u 4; do sleep 0.05; done\n: > %s\nwhile [ ! -e %s ]; do sleep 0.05; done\nexec %s \"$@\"\n",
		bin, started, goOn, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cli := exec.Command(bin, "upgrade", "--admin", strings.TrimPrefix(u.Admin, "http://"), "--binary", wrapper)
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer cli.Wait()
	vstest.WaitFor(t, 30*time.Second, func() error {
		if _, err := os.Stat(started); err != nil {
			return errors.New("the new process has not started yet")
		}
		return nil
	})
	syscall.Kill(old, syscall.SIGKILL)
	waitGone(t, old)
	if err := os.WriteFile(goOn, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// The new process serves, and holds the state (a swap is recorded).
	var pid int
	vstest.WaitFor(t, 30*time.Second, func() error {
		if pid = u.pid(t); pid == old {
			return errors.New("the PID file still names the killed process")
		}
		return nil
	})
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return fmt.Errorf("the new process %d is gone", pid)
		}
		resp, err := hc.Get(u.Prod + "/api/test")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	// Still there a moment later (it did not exit on the failed "ready").
	waitLog(t, u.log, "this one serves on")
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Fatalf("the new process %d exited", pid)
	}
	if _, err := u.Client.Swap(context.Background(), swapRequest("after the old process was killed mid-upgrade")); err != nil {
		t.Fatalf("swap through the new process: %v", err)
	}
}

// waitLog waits until the log file holds s.
func waitLog(t *testing.T, log, s string) {
	t.Helper()
	vstest.WaitFor(t, 30*time.Second, func() error {
		out, _ := os.ReadFile(log)
		if !strings.Contains(string(out), s) {
			return fmt.Errorf("the log does not say %q yet", s)
		}
		return nil
	})
}
