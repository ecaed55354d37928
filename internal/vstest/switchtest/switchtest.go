// Package switchtest starts "vipswap serve" for tests and talks to it
// through the client. It is apart from vstest so that the packages the
// client depends on can use vstest in their own tests.
package switchtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/launch"
)

// Switch is a running "vipswap serve".
type Switch struct {
	*vstest.Process
	// Prod, Stage and Admin are base URLs such as http://127.0.0.1:41234.
	Prod, Stage, Admin string
	// Client talks to Admin.
	Client *client.Client
}

var listeningRE = regexp.MustCompile(`msg=listening listener=admin addr=(\S+)`)

// Serve writes config to a file in dir and starts "vipswap serve" on it. The
// config should use 127.0.0.1:0 for the listeners and admin; Serve learns the
// real addresses from the log and the status.
func Serve(t testing.TB, dir, config string) *Switch {
	t.Helper()
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ReclaimAfter(t, dir)
	p := vstest.Start(t, vstest.Binary(t), "serve", "-c", path)
	return Attach(t, p)
}

// ReclaimAfter makes sure no managed instance of a vipswap whose state is
// in dir outlives the test: the harness stops vipswap with SIGKILL, which
// the instances survive (an upgrade hands them to the next process), so
// the cleanup stops what the instance ledgers in dir list, as the next
// vipswap would. Call it before starting vipswap: cleanups run
// last-registered first.
func ReclaimAfter(t testing.TB, dir string) {
	t.Cleanup(func() {
		ledgers, _ := filepath.Glob(filepath.Join(dir, "*.instances"))
		for _, path := range ledgers {
			l, err := launch.OpenLedger(path, slog.New(slog.DiscardHandler))
			if err == nil {
				_, err = l.Reclaim(5 * time.Second)
			}
			if err != nil {
				t.Errorf("stopping leftover instances: %v", err)
			}
		}
	})
}

// ServeLimited is Serve with the process's descriptor limit (soft and hard)
// set to nofile, as "ulimit -n" does.
func ServeLimited(t testing.TB, dir, config string, nofile int) *Switch {
	t.Helper()
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile)
	ReclaimAfter(t, dir)
	p := vstest.Start(t, "sh", "-c", script, vstest.Binary(t), "serve", "-c", path)
	return Attach(t, p)
}

// Attach waits until p, a "vipswap serve" process, listens, and returns it
// as a Switch.
func Attach(t testing.TB, p *vstest.Process) *Switch {
	t.Helper()
	m := p.WaitLine(t, listeningRE, 30*time.Second)
	s := &Switch{Process: p, Admin: "http://" + m[1]}
	s.Client = client.New(s.Admin)
	st, err := s.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Listeners {
		switch l.Name {
		case "prod":
			s.Prod = "http://" + l.Addr
		case "stage":
			s.Stage = "http://" + l.Addr
		}
	}
	return s
}

// WaitHealthy waits until every instance of every slot is healthy.
func (s *Switch) WaitHealthy(t testing.TB) {
	t.Helper()
	vstest.WaitFor(t, 30*time.Second, func() error {
		st, err := s.Client.Status(context.Background())
		if err != nil {
			return err
		}
		for _, slot := range st.Slots {
			for _, i := range slot.Instances {
				if !i.Healthy {
					return fmt.Errorf("instance %s of slot %s is not healthy", i.Addr, slot.Name)
				}
			}
		}
		return nil
	})
}

// Active returns the active slot.
func (s *Switch) Active(t testing.TB) string {
	t.Helper()
	st, err := s.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Active
}
