package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/wire"
)

// TestUpgradeOldProcessStopsAcceptingAdmin: once the new process took
// over, the old one, still finishing a long request in flight, accepts
// no admin connection: the admin socket is shared, and an admin request
// it took would be answered by a process that no longer holds the state
// (its store handed over: changes refused, a status that says the store
// is unreachable) instead of the one that serves.
func TestUpgradeOldProcessStopsAcceptingAdmin(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)

	// The blue instance holds /hold until the test lets go.
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	held := make(chan struct{}, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		fmt.Fprint(w, `{"slot":"blue"}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { letGo(); srv.Close() })
	_, addrs := startStatic(t, 1)
	addrs["blue"] = []string{ln.Addr().String()}

	u := serveUpgradable(t, bin, dir, testConfig(dir, staticSlots(addrs)))
	u.WaitHealthy(t)
	old := u.pid(t)

	// A request in flight keeps the old process draining.
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 2 * time.Minute}
	holdDone := make(chan error, 1)
	go func() {
		resp, err := hc.Get(u.Prod + "/hold")
		if err == nil {
			resp.Body.Close()
		}
		holdDone <- err
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the held request did not reach the instance")
	}
	if out, code := u.upgradeCLI(t, bin); code != 0 {
		t.Fatalf("upgrade: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", old)); err != nil {
		t.Fatal("the old process exited with a request in flight")
	}

	// Admin requests on new connections: every one answered by the
	// process that holds the state.
	stale := 0
	for i := range 40 {
		resp, err := hc.Get(u.Admin + "/v1/status")
		if err != nil {
			t.Fatalf("status %d: %v", i, err)
		}
		var st wire.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("status %d: %v", i, err)
		}
		if !st.Store.Reachable {
			stale++
		}
	}
	if stale != 0 {
		t.Errorf("%d of 40 admin requests after the upgrade were answered by the old process (store handed over)", stale)
	}
	letGo()
	if err := <-holdDone; err != nil {
		t.Errorf("the request in flight across the upgrade: %v", err)
	}
	waitGone(t, old)
}
