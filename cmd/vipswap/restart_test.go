package main

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// TestRestartKeepsState: swap, kill -9 vipswap, start it again on the same
// state file: it serves the swapped state.
func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	cfg := testConfig(dir, staticSlots(addrs))
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	res, err := sw.Client.Swap(context.Background(), wire.ChangeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sw.Signal(t, syscall.SIGKILL)
	sw.Wait(t, 10*time.Second)

	again := switchtest.Serve(t, dir, cfg)
	st, err := again.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Active != "green" || st.Revision != res.Revision {
		t.Fatalf("after restart: active %s revision %d, want green revision %d", st.Active, st.Revision, res.Revision)
	}
	again.WaitHealthy(t)
	if a := getSlot(http.DefaultClient, again.Prod+"/api/test"); a.status != 200 || a.slot != "green" {
		t.Fatalf("prod after restart: %+v, want 200 from green", a)
	}
}
