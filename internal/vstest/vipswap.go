package vstest

import (
	"regexp"
	"testing"
	"time"
)

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
