package h1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// A client's pool may hold a connection it dialed and never used: Go's
// http.Transport dials for a request, serves the request on a connection
// that came free meanwhile, and pools the new one (a load of 200 clients
// holds dozens of them). Go counts such a connection as reused, like any
// pooled one: a GET that meets it closed is sent again unseen (a POST
// fails). To the client it is a kept-alive connection, so the server must
// keep it for the idle timeout, as it keeps one between two requests.

// TestSilentConnectionWaitsTheIdleTimeout: a connection that sends nothing
// is closed at the idle timeout, not at the read-header timeout, whether it
// is parked or waits on its goroutine.
func TestSilentConnectionWaitsTheIdleTimeout(t *testing.T) {
	const headTimeout, idleTimeout = 200 * time.Millisecond, 2 * time.Second
	for _, park := range []bool{true, false} {
		t.Run(fmt.Sprintf("parked %v", park), func(t *testing.T) {
			s, addr := start(t, &Server{Handler: ok200, ReadHeaderTimeout: headTimeout, IdleTimeout: idleTimeout, noParking: !park})
			if park && s.parker == nil {
				t.Skip("no parking on this system")
			}
			dialed := time.Now()
			c := dialFrom(t, "127.0.0.1", addr)
			if !closed(c, 30*idleTimeout) {
				t.Fatalf("a silent connection still open after %s (idle timeout %s)", time.Since(dialed), idleTimeout)
			}
			took := time.Since(dialed)
			if took < idleTimeout {
				t.Fatalf("a silent connection was closed %s after it was opened: before the idle timeout (%s; read-header timeout %s)",
					took.Round(time.Millisecond), idleTimeout, headTimeout)
			}
			t.Logf("a silent connection was closed %s after it was opened (idle timeout %s)", took.Round(time.Millisecond), idleTimeout)
		})
	}
}

// gatedConn is a client connection whose reads wait until its gate opens:
// a client too busy to notice at once that the server closed it (its
// transport's read loop not scheduled yet), as on a loaded machine.
type gatedConn struct {
	net.Conn
	gate <-chan struct{}
}

func (g *gatedConn) Read(p []byte) (int, error) {
	<-g.gate
	return g.Conn.Read(p)
}

// TestSpareConnectionIsNotReplayed: a Go client pools a connection it
// dialed and did not need; later, past the read-header timeout, a GET goes
// out on it. The server must answer it: closing the connection as silent
// makes the client send the GET again (two attempts), which a POST could
// not survive. The client's reads are held until its request is written,
// so the close (if any) meets the request, as it does when a loaded
// client's read loop runs late; the server's once-a-second sweep of its
// parked connections is run as it would run then.
func TestSpareConnectionIsNotReplayed(t *testing.T) {
	const headTimeout = time.Second
	s, addr := start(t, &Server{Handler: ok200, ReadHeaderTimeout: headTimeout, IdleTimeout: time.Minute})
	if s.parker == nil {
		t.Skip("no parking on this system")
	}
	stop := make(chan struct{})
	gate := make(chan struct{})
	var openGate sync.Once
	spareDialing := make(chan struct{})
	releaseSpare := make(chan struct{})
	spareTaken := make(chan struct{})
	var dials atomic.Int32
	var spare atomic.Pointer[gatedConn]
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			n := dials.Add(1)
			if n > 1 {
				// Later dials wait until the spare was handed out, so the
				// request takes it whether or not it is pooled yet.
				select {
				case <-spareTaken:
				case <-stop:
					return nil, errors.New("test over")
				}
			}
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, a)
			if err != nil || n > 1 {
				return c, err
			}
			close(spareDialing)
			select {
			case <-releaseSpare:
			case <-stop:
				c.Close()
				return nil, errors.New("test over")
			}
			g := &gatedConn{Conn: c, gate: gate}
			spare.Store(g)
			return g, nil
		},
		DisableCompression: true,
	}
	t.Cleanup(func() {
		close(stop)
		openGate.Do(func() { close(gate) })
		tr.CloseIdleConnections()
	})
	client := &http.Client{Transport: tr, Timeout: time.Minute} // only ends a hung request
	url := "http://" + addr + "/"

	// A request that no longer needs its connection when the dial lands
	// (here it was cancelled; under load another one came free first):
	// the transport pools the connection it dialed, unused.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	abandoned := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		abandoned <- err
	}()
	<-spareDialing
	cancel()
	if err := <-abandoned; err == nil {
		t.Fatal("the cancelled request was answered")
	}
	close(releaseSpare)
	vstest.WaitFor(t, 5*time.Second, func() error { return parked(s, 1) })
	s.parker.sweep(time.Now().Add(2 * headTimeout))

	var attempts atomic.Int32
	var first atomic.Value
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if attempts.Load() == 0 {
				first.Store(info)
				if g, ok := info.Conn.(*gatedConn); ok && g == spare.Load() {
					close(spareTaken)
				}
			}
		},
		WroteHeaders: func() { attempts.Add(1) },
		WroteRequest: func(httptrace.WroteRequestInfo) { openGate.Do(func() { close(gate) }) },
	}
	req, _ = http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("the GET on the spare connection: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	info, _ := first.Load().(httptrace.GotConnInfo)
	if g, _ := info.Conn.(*gatedConn); g == nil || g != spare.Load() || !info.Reused {
		t.Fatalf("the GET did not go out on the spare connection first (%+v): the test did not set up what it tests", info)
	}
	if n := attempts.Load(); n != 1 || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("the GET on a spare connection the client counts as reused: %d %q after %d attempts; want 200 \"ok\" after 1 (the server closed it as silent, and the client sent the request again)",
			resp.StatusCode, body, n)
	}
}
