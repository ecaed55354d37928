package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// TestClientConnectionLimits: a listener refuses a client's connection
// beyond MaxConnsPerClient, which Reconfigure changes; at MaxConns it
// closes an idle connection for a new one; both are counted and logged.
func TestClientConnectionLimits(t *testing.T) {
	release := make(chan struct{})
	blue := newInstance(t, "blue", "blue", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		io.WriteString(w, "blue")
	})
	var buf vstest.Buffer
	p := New(Options{MaxConns: 6, MaxConnsPerClient: 3, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	p.Apply(table(1, []*route.Instance{blue.inst}, nil))
	prod, _ := serve(t, p)
	addr := strings.TrimPrefix(prod, "http://")
	open := func(from string) (net.Conn, bool) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("neither answered nor closed: %v", err)
			}
			return c, false
		}
		resp.Body.Close()
		return c, resp.StatusCode == 200
	}
	// The cap is on connections in use: three held by slow requests.
	var held []net.Conn
	for range 3 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
		held = append(held, c)
	}
	vstest.WaitFor(t, 10*time.Second, func() error { return expect(blue.hits.Load() == 3) })
	if _, ok := open("127.0.0.2"); ok {
		t.Fatal("a fourth connection from one client admitted under a cap of 3")
	}
	close(release)
	for _, c := range held {
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("a held request: %v", err)
		}
	}
	p.Reconfigure(Options{MaxConnsPerClient: 4})
	if _, ok := open("127.0.0.2"); !ok {
		t.Fatal("a fourth connection refused after the cap was raised to 4")
	}
	for range 2 {
		if _, ok := open("127.0.0.3"); !ok {
			t.Fatal("another client refused")
		}
	}
	// At the limit of 6, all idle: the next client takes the place of one.
	if _, ok := open("127.0.0.4"); !ok {
		t.Fatal("a new client at the limit, with every connection idle, was refused")
	}
	st := p.ConnStats(route.Prod)
	if st.Refused != 1 || st.Reclaimed != 1 || st.Open != 6 {
		t.Fatalf("stats %+v, want 1 refused, 1 reclaimed, 6 open", st)
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		out := buf.String()
		for _, want := range []string{"refused a connection from 127.0.0.2", "closing the connections idle the longest"} {
			if !strings.Contains(out, want) || !strings.Contains(out, "level=WARN") {
				return fmt.Errorf("the log has no warning %q:\n%s", want, out)
			}
		}
		return nil
	})
}
