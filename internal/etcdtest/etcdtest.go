// Package etcdtest runs a real etcd server (Debian's etcd-server package,
// which scripts/test.sh installs) on loopback ports for tests.
package etcdtest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// Etcd is one etcd server with its own data directory.
type Etcd struct {
	// Endpoint is its client URL, http://127.0.0.1:PORT.
	Endpoint string

	dir, peer string
	proc      *vstest.Process
}

// Start runs an etcd server on free loopback ports; the test's cleanup
// stops it.
func Start(t testing.TB) *Etcd {
	t.Helper()
	e := &Etcd{
		Endpoint: "http://" + vstest.FreeAddr(t),
		peer:     "http://" + vstest.FreeAddr(t),
		dir:      filepath.Join(t.TempDir(), "etcd"),
	}
	e.Start(t)
	return e
}

// Start starts the server again after Kill, on the same ports and data.
func (e *Etcd) Start(t testing.TB) {
	t.Helper()
	bin := vstest.Need(t, "etcd", "etcd-server")
	e.proc = vstest.Start(t, bin,
		"--name", "test", "--data-dir", e.dir,
		"--listen-client-urls", e.Endpoint, "--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", e.peer, "--initial-advertise-peer-urls", e.peer,
		"--initial-cluster", "test="+e.peer, "--initial-cluster-state", "new",
		"--logger", "zap", "--log-level", "error")
	vstest.WaitFor(t, 20*time.Second, func() error {
		resp, err := http.Get(e.Endpoint + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
}

// Kill stops the server at once (SIGKILL) and waits for it to exit.
func (e *Etcd) Kill(t testing.TB) {
	t.Helper()
	e.proc.Signal(t, 9)
	e.proc.Wait(t, 10*time.Second)
}

// Recreate kills the server and starts it again on the same ports with
// an empty data directory: what an operator who lost etcd's data, or
// restored an older backup, hands the nodes (its revisions start again).
func (e *Etcd) Recreate(t testing.TB) {
	t.Helper()
	e.Kill(t)
	if err := os.RemoveAll(e.dir); err != nil {
		t.Fatal(err)
	}
	e.Start(t)
}

// Addr is the endpoint's host:port.
func (e *Etcd) Addr() string { return strings.TrimPrefix(e.Endpoint, "http://") }
