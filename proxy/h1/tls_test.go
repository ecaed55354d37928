package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
)

// TestIdleTLSConnectionIsKept: a connection h1 cannot park (a TLS one has
// no socket of its own to watch) waits its idle time in its goroutine; it
// was closed once the parking window passed, so a kept-alive client met a
// closed connection on its next request.
func TestIdleTLSConnectionIsKept(t *testing.T) {
	tlsVersion := make(chan uint16, 2)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			tlsVersion <- r.TLS.Version
		} else {
			tlsVersion <- 0
		}
		echo.ServeHTTP(w, r)
	})
	s := &Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	conn, err := tls.Dial("tcp", startTLS(t, s), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, br, "GET")
	// Idle past the parking window, as the server sees it (or closed).
	vstest.WaitFor(t, time.Minute, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.conns) == 0 {
			return nil // closed: the next request tells
		}
		for c := range s.conns {
			if idle := time.Since(time.Unix(0, c.idleSince.Load())); c.state.Load() == stateIdle && idle > 3*parkAfter {
				return nil
			}
		}
		return fmt.Errorf("the connection has not been idle for %s", 3*parkAfter)
	})
	io.WriteString(conn, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := read(t, br, "GET"); !strings.HasPrefix(body, "GET /2") {
		t.Fatalf("the kept TLS connection answered %q", body)
	}
	// The handler sees the connection's TLS state (X-Forwarded-Proto:
	// https, a Secure affinity cookie).
	for i := range 2 {
		if v := <-tlsVersion; v < tls.VersionTLS12 {
			t.Fatalf("request %d: the handler saw TLS version %#x, want the connection's", i+1, v)
		}
	}
}

// startTLS serves s over TLS on a new listener and returns its address.
func startTLS(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.init()
	tlsLn := NewTLSListener(ln, &tls.Config{Certificates: []tls.Certificate{tlstest.Valid(t, t.TempDir(), "127.0.0.1").TLS}})
	served := make(chan error, 1)
	go func() { served <- s.Serve(tlsLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only ends a hung shutdown
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return ln.Addr().String()
}

// halfHello is the start of a TLS ClientHello: a handshake record's
// header announcing 512 bytes, and the first few of them.
var halfHello = []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}

// TestSlowHandshakeIsBoundByReadHeaderTimeout: a client that starts a
// TLS handshake and stops half-way is a slow head, not an idle
// connection: it was held for IdleTimeout (the handshake runs on the
// first read, under the idle deadline), so a slowloris over TLS kept its
// connections for two minutes rather than ten seconds.
func TestSlowHandshakeIsBoundByReadHeaderTimeout(t *testing.T) {
	s := &Server{Handler: ok200, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Hour}
	addr := startTLS(t, s)
	c := dialFrom(t, "127.0.0.2", addr)
	if _, err := c.Write(halfHello); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if !closed(c, 30*time.Second) {
		t.Fatalf("a half-sent ClientHello is still held after %s (ReadHeaderTimeout %s, IdleTimeout %s)",
			time.Since(began).Round(time.Millisecond), s.ReadHeaderTimeout, s.IdleTimeout)
	}
	t.Logf("closed after %s", time.Since(began).Round(time.Millisecond))
}

// TestIdleTLSConnectionsAreReclaimed: at MaxConns the server closes the
// connection idle the longest to admit a new one. Only parked connections
// were looked at, and a TLS connection is never parked: clients that held
// MaxConns idle TLS connections kept every other client out until their
// IdleTimeout.
func TestIdleTLSConnectionsAreReclaimed(t *testing.T) {
	s := &Server{Handler: ok200, MaxConns: 4, IdleTimeout: time.Hour}
	addr := startTLS(t, s)
	for i := range s.MaxConns {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i), addr)
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		read(t, bufio.NewReader(tc), "GET") // then idle, kept alive
	}
	v := &victim{
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}},
		url: "https://" + addr + "/victim",
	}
	v.run(5, 2)
	v.check(t)
	if s.Reclaimed() == 0 {
		t.Fatal("no idle connection was reclaimed")
	}
}

// TestTLSHangUpCancelsSlowRequest: a client that leaves during a slow
// request cancels its context over TLS too. The hang-up watch looked at
// connections with a socket of their own only, so a TLS client's request
// (one waiting on a held instance, or a slow one) ran on without it.
func TestTLSHangUpCancelsSlowRequest(t *testing.T) {
	cancelled := make(chan error, 1)
	started := make(chan struct{})
	addr := startTLS(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			cancelled <- nil
		case <-time.After(30 * time.Second): // only ends a hung test
			cancelled <- fmt.Errorf("the request's context was not cancelled after the client hung up")
		}
	})})
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	conn.Close()
	if err := <-cancelled; err != nil {
		t.Fatal(err)
	}
}

// TestTLSShutdown: Shutdown closes idle TLS connections and those in the
// middle of a handshake (no request to finish there), and lets a request
// in flight over TLS finish. A handshake begun is not idle (it is due
// within ReadHeaderTimeout), but it must not hold a shutdown for that
// long either.
func TestTLSShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s := &Server{ReadHeaderTimeout: time.Hour, IdleTimeout: time.Hour, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.init()
	tlsLn := NewTLSListener(ln, &tls.Config{Certificates: []tls.Certificate{tlstest.Valid(t, t.TempDir(), "127.0.0.1").TLS}})
	served := make(chan error, 1)
	go func() { served <- s.Serve(tlsLn) }()
	addr := ln.Addr().String()
	dialTLS := func() (*tls.Conn, *bufio.Reader) {
		c := tls.Client(dialFrom(t, "127.0.0.1", addr), &tls.Config{InsecureSkipVerify: true})
		return c, bufio.NewReader(c)
	}
	idle, idleBR := dialTLS()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, idleBR, "GET")
	busy, busyBR := dialTLS()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	half := dialFrom(t, "127.0.0.2", addr)
	half.Write(halfHello)
	vstest.WaitFor(t, time.Minute, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for c := range s.conns {
			if c.state.Load() != stateIdle {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("%d connections in use, want 2 (the request, the handshake)", n)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // far beyond what a shutdown takes
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(ctx) }()
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Fatalf("idle TLS connection: %v, want closed by shutdown", err)
	}
	if !closed(half, time.Minute) {
		t.Fatal("the connection in its handshake is still open")
	}
	close(release)
	if resp, body := read(t, busyBR, "GET"); body != "done" || !resp.Close {
		t.Fatalf("in-flight request: %q close=%v, want done and Connection: close", body, resp.Close)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v, want every connection closed", err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// TestSlowHandshakeWaveIsBoundedPerClient: one address opens twice as
// many connections as the server's limit and sends half a ClientHello on
// each. The per-client cap admits a few and closes the rest at once, the
// handshake deadline closes the admitted ones, and another client over
// TLS gets every answer meanwhile.
func TestSlowHandshakeWaveIsBoundedPerClient(t *testing.T) {
	const limit, perClient, timeout = 12, 4, 10 * time.Second
	s := &Server{Handler: ok200, MaxConns: limit, ReadHeaderTimeout: timeout, IdleTimeout: time.Hour, MaxConnsPerClient: perClient}
	addr := startTLS(t, s)
	var wave []net.Conn
	for range 2 * limit {
		c := dialFrom(t, "127.0.0.2", addr)
		c.Write(halfHello)
		wave = append(wave, c)
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := s.Refused(); n != 2*limit-perClient {
			return fmt.Errorf("%d connections refused, want %d", n, 2*limit-perClient)
		}
		return nil
	})
	// The other client keeps within its own cap: two requests at a time
	// on at most two connections. (Left alone, Go's transport dials a new
	// connection for a waiting request even as one frees up, and such a
	// connection, handshaken but never used, counts as in use: a client
	// with a cap of 4 may then refuse itself.)
	v := &victim{
		client: &http.Client{Timeout: timeout + time.Minute, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: 16, MaxConnsPerHost: 2}},
		url: "https://" + addr + "/victim",
	}
	v.run(10, 2)
	if n := s.Refused(); n != 2*limit-perClient {
		t.Errorf("%d connections refused, want the wave's %d alone", n, 2*limit-perClient)
	}
	v.check(t)
	for i, c := range wave {
		if !closed(c, timeout+time.Minute) {
			t.Fatalf("slow handshake %d is still open", i)
		}
	}
}
