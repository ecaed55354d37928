// Package haproxytest runs a real HAProxy (Debian's haproxy package, which
// scripts/test.sh installs) on loopback ports for tests, set up the way
// docs/haproxy.md describes: each listener's frontend picks its backend
// from a map by rand(10000), one backend per slot.
package haproxytest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// HAProxy is one HAProxy process and its files.
type HAProxy struct {
	// Prod and Stage are the frontends' addresses (host:port).
	Prod, Stage string
	// Socket is the runtime API's unix socket.
	Socket string
	// ProdMap and StageMap are the map files the frontends use.
	ProdMap, StageMap string

	config string
	proc   *vstest.Process
}

// Start writes a configuration with a backend per slot (servers named
// s1, s2... at the given addresses, checked with GET /api/ping?slot=SLOT)
// and maps that send prod to active and stage to standby, and starts
// HAProxy on it.
func Start(t testing.TB, slots map[string][]string, active, standby string) *HAProxy {
	t.Helper()
	dir := t.TempDir()
	h := &HAProxy{
		Prod: vstest.FreeAddr(t), Stage: vstest.FreeAddr(t), Socket: filepath.Join(dir, "admin.sock"),
		ProdMap: filepath.Join(dir, "prod.map"), StageMap: filepath.Join(dir, "stage.map"),
		config: filepath.Join(dir, "haproxy.cfg"),
	}
	var b strings.Builder
	fmt.Fprintf(&b, `global
  stats socket %s mode 600 level admin
  stats timeout 10s
  log stdout format raw local0
defaults
  mode http
  log global
  option httplog
  option dontlog-normal
  timeout connect 2s
  timeout check 2s
  timeout client 30s
  timeout server 30s
  retries 2
  option redispatch
frontend prod
  bind %s
  use_backend %%[rand(10000),map_int(%s,be_none)]
frontend stage
  bind %s
  use_backend %%[rand(10000),map_int(%s,be_none)]
backend be_none
  http-request return status 503 content-type text/plain string "no slot"
`, h.Socket, h.Prod, h.ProdMap, h.Stage, h.StageMap)
	names := make([]string, 0, len(slots))
	for name := range slots {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, "backend be_%s\n  balance roundrobin\n  option httpchk GET /api/ping?slot=%s\n  default-server inter 200ms fall 2 rise 2\n", name, name)
		for i, addr := range slots[name] {
			fmt.Fprintf(&b, "  server s%d %s check\n", i+1, addr)
		}
	}
	write(t, h.config, b.String())
	write(t, h.ProdMap, "0:9999 be_"+active+"\n")
	write(t, h.StageMap, "0:9999 be_"+standby+"\n")
	h.Start(t)
	return h
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Start starts HAProxy (again, after Kill) on its configuration and map
// files as they are on disk, and waits until its runtime API answers.
func (h *HAProxy) Start(t testing.TB) {
	t.Helper()
	bin := vstest.Need(t, "haproxy", "haproxy")
	os.Remove(h.Socket)
	h.proc = vstest.Start(t, bin, "-db", "-f", h.config)
	vstest.WaitFor(t, 20*time.Second, func() error {
		c, err := net.Dial("unix", h.Socket)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Kill stops HAProxy at once (SIGKILL) and waits for it to exit.
func (h *HAProxy) Kill(t testing.TB) {
	t.Helper()
	h.proc.Signal(t, 9)
	h.proc.Wait(t, 10*time.Second)
}

// WaitServing waits until at least n servers of backend take new requests
// in HAProxy's own view: its "show stat" says UP (passing its checks,
// neither drained nor in maintenance). vipswap's status cannot tell this
// alone: an instance's health changing changes the routing without a new
// revision, so the data plane showing the status's revision does not mean
// HAProxy has put a newly healthy instance's server in rotation yet; a
// load started meanwhile gets HAProxy's own 503.
func (h *HAProxy) WaitServing(t testing.TB, backend string, n int) {
	t.Helper()
	vstest.WaitFor(t, 20*time.Second, func() error {
		up, seen := h.serving(backend)
		if up < n {
			return fmt.Errorf("HAProxy's backend %s has %d servers taking requests (%s), want %d", backend, up, strings.Join(seen, ", "), n)
		}
		return nil
	})
}

// serving counts the servers of backend that HAProxy says are UP, and
// returns every server's status.
func (h *HAProxy) serving(backend string) (int, []string) {
	var up int
	var seen []string
	col := map[string]int{}
	for line := range strings.Lines(Forward(h.Socket, "show stat")) {
		f := strings.Split(strings.TrimRight(line, "\n"), ",")
		if strings.HasPrefix(line, "# ") {
			f[0] = strings.TrimPrefix(f[0], "# ")
			for i, name := range f {
				col[name] = i
			}
			continue
		}
		px, sv, st := col["pxname"], col["svname"], col["status"]
		if len(col) == 0 || len(f) <= st || f[px] != backend || f[sv] == "BACKEND" || f[sv] == "FRONTEND" {
			continue
		}
		seen = append(seen, f[sv]+" "+f[st])
		// "UP 1/3": a check failed, still taking requests.
		if f[st] == "UP" || strings.HasPrefix(f[st], "UP ") {
			up++
		}
	}
	return up, seen
}
