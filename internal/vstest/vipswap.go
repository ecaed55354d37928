package vstest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
)

// Switch is a running "vipswap serve".
type Switch struct {
	*Process
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
	p := Start(t, Binary(t), "serve", "-c", path)
	return attach(t, p)
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
	p := Start(t, "sh", "-c", script, Binary(t), "serve", "-c", path)
	return attach(t, p)
}

func attach(t testing.TB, p *Process) *Switch {
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
	WaitFor(t, 30*time.Second, func() error {
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

// App is a running "vipswap app".
type App struct {
	*Process
	// Addr is the host:port it listens on.
	Addr string
}

var appRE = regexp.MustCompile(`listening on (\S+)`)

// StartApp starts "vipswap app" for slot on addr (use 127.0.0.1:0 for a free
// port) and waits until it listens.
func StartApp(t testing.TB, slot, addr string) *App {
	t.Helper()
	p := Start(t, Binary(t), "app", "--slot", slot, "--version", slot+"-v1", "--listen", addr)
	m := p.WaitLine(t, appRE, 30*time.Second)
	return &App{Process: p, Addr: m[1]}
}
