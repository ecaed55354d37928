package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// TestKillDuringSwapBurst: kill -9 vipswap while swaps pour in, start it
// again: the state equals the last applied history entry.
func TestKillDuringSwapBurst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	cfg := testConfig(dir, staticSlots(addrs))
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)

	var applied atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := sw.Client.Swap(context.Background(), wire.ChangeRequest{}); err == nil {
					applied.Add(1)
				}
			}
		})
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if applied.Load() < 50 {
			return errNotYet
		}
		return nil
	})
	sw.Signal(t, syscall.SIGKILL)
	sw.Wait(t, 10*time.Second)
	close(stop)
	wg.Wait()

	again := switchtest.Serve(t, dir, cfg)
	st, err := again.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h, err := again.Client.History(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var last wire.HistoryEntry
	restarts := 0
	for _, e := range h {
		if e.Operation == "restart" { // the start after the kill is one
			restarts++
			continue
		}
		if e.Result == "applied" {
			last = e
			break
		}
	}
	if restarts != 1 {
		t.Errorf("%d restart entries in the history, want 1 (the start after the kill)", restarts)
	}
	t.Logf("%d swaps answered before the kill; %d history entries; last applied %+v", applied.Load(), len(h), last)
	if last.Revision != st.Revision || last.To != st.Active {
		t.Fatalf("after restart: revision %d active %s; last applied entry says revision %d active %s", st.Revision, st.Active, last.Revision, last.To)
	}
	if int64(len(h)-1-restarts) < applied.Load() {
		t.Fatalf("%d swaps were answered as applied but only %d are in the history", applied.Load(), len(h)-1)
	}
}

// TestCorruptStateFile: on an empty, garbage or truncated state file
// vipswap refuses to start with one line naming the file and the repair,
// never a stack dump, and leaves the file as it was. Before, a zero-byte
// file was silently replaced by a new state (prod back on the configured
// active slot) and a truncated one crashed with SIGBUS.
func TestCorruptStateFile(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		damage func(t *testing.T, path string)
		want   string
	}{
		"zero bytes": {func(t *testing.T, path string) { os.WriteFile(path, nil, 0o600) }, "is empty (0 bytes)"},
		"garbage": {func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("this is not a bbolt file ", 400)), 0o600)
		}, "is damaged (no valid bbolt header"},
		"truncated": {func(t *testing.T, path string) {
			sw := switchtest.Serve(t, filepath.Dir(path), testConfig(filepath.Dir(path), staticSlots(map[string][]string{"blue": {"127.0.0.1:1"}, "green": {"127.0.0.1:2"}})))
			for range 50 {
				if _, err := sw.Client.Swap(context.Background(), wire.ChangeRequest{Force: true, Reason: strings.Repeat("r", 1000)}); err != nil {
					t.Fatal(err)
				}
			}
			sw.Signal(t, syscall.SIGTERM)
			sw.Wait(t, 30*time.Second)
			info, _ := os.Stat(path)
			os.Truncate(path, info.Size()/2)
		}, "is damaged (it is truncated"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "state.db")
			c.damage(t, path)
			before, _ := os.ReadFile(path)
			cfgPath := filepath.Join(dir, "vipswap.yaml")
			os.WriteFile(cfgPath, []byte(testConfig(dir, staticSlots(map[string][]string{"blue": {"127.0.0.1:1"}, "green": {"127.0.0.1:2"}}))), 0o600)
			p := vstest.Start(t, vstest.Binary(t), "serve", "-c", cfgPath)
			if code := p.Wait(t, 30*time.Second); code != 1 {
				t.Fatalf("exit %d, want 1", code)
			}
			out := p.Output()
			if !strings.HasPrefix(out, "vipswap serve: state file "+path+" ") || !strings.Contains(out, c.want) ||
				!strings.Contains(out, "vipswap state repair") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Fatalf("output %q, want one line naming %s, %q and the repair", out, path, c.want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Fatal("the damaged state file was changed")
			}
		})
	}
}

// TestUnwritableStateFile: with the state file made immutable (chattr +i
// stops root too) a swap fails with a clear error and routing stays exactly
// as it was; once writable again, swaps work and nothing was lost.
func TestUnwritableStateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	ctx := context.Background()
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Skipf("cannot make the state file immutable here (chattr: %v %s); the controller test covers a failing store", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
	before, _ := sw.Client.Status(ctx)

	_, err := sw.Client.Swap(ctx, wire.ChangeRequest{})
	if err == nil || !strings.Contains(err.Error(), "swap not applied: write state file "+path) {
		t.Fatalf("got %v, want a failed swap naming the state file", err)
	}
	after, _ := sw.Client.Status(ctx)
	if after.Active != "blue" || after.Revision != before.Revision {
		t.Fatalf("state moved to %s@%d although it could not be stored", after.Active, after.Revision)
	}
	if a := getSlot(httpClient, sw.Prod+"/api/test"); a.slot != "blue" {
		t.Fatalf("prod answered from %q after the failed swap, want blue", a.slot)
	}

	exec.Command("chattr", "-i", path).Run()
	res, err := sw.Client.Swap(ctx, wire.ChangeRequest{})
	if err != nil || res.To != "green" || res.Revision != before.Revision+1 {
		t.Fatalf("swap after the file is writable again: %+v, %v", res, err)
	}
}
