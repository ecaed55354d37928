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

// TestTLSReclaimDuringTheWaitCloses: at MaxConns, a TLS connection whose
// answer has just gone out (within the wait for its next request, which
// makes it idle) is reclaimed for a new connection. The reclaim sets a
// past read deadline to wake it; the wait's timeout then moved the
// deadline on to IdleTimeout, so the reclaimed connection sat until then
// holding its slot, the new connection (and the accept loop) waited
// behind it, and Shutdown, which does not wake a reclaimed connection,
// waited too.
func TestTLSReclaimDuringTheWaitCloses(t *testing.T) {
	s := &Server{Handler: ok200, MaxConns: 1, IdleTimeout: 10 * time.Minute}
	addr := startTLS(t, s)
	a, abr := dialTLSTo(t, addr)
	io.WriteString(a, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := read(t, abr, "GET"); resp.StatusCode != 200 {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	// At once, within the wait that follows a's answer: b needs a's slot.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(time.Minute)) // IdleTimeout is ten
	b := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	began := time.Now()
	io.WriteString(b, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(b), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("a new connection at MaxConns got no answer after %s (the idle one's IdleTimeout is %s): %v",
			time.Since(began).Round(time.Millisecond), s.IdleTimeout, err)
	}
	resp.Body.Close()
	t.Logf("admitted and answered in %s; %d reclaimed", time.Since(began).Round(time.Millisecond), s.Reclaimed())
	if s.Reclaimed() == 0 {
		t.Fatal("the idle connection was not reclaimed")
	}
}

// coalescer sends what is written to it while holding in one write: TLS
// records written one by one reach the server in one segment.
type coalescer struct {
	net.Conn
	hold bool
	buf  []byte
}

func (c *coalescer) Write(p []byte) (int, error) {
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *coalescer) release() error {
	c.hold = false
	_, err := c.Conn.Write(c.buf)
	c.buf = nil
	return err
}

// TestTLSShutdownServesARequestTLSHolds: two requests in two TLS records,
// in one segment: TLS reads both from the socket, and hands the first
// record only to the server's reader. Shutdown begins while the first is
// handled, after its answer's head went out (without Connection: close).
// The second has arrived (nothing of it is left on the socket, nor in the
// reader: it is in TLS's buffer); the connection was closed under it, as
// if it had not. On a cleartext connection the reader holds it, and it is
// served.
func TestTLSShutdownServesARequestTLSHolds(t *testing.T) {
	started := make(chan string, 1)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
		if r.URL.Path == "/1" {
			// The answer's head goes out before Shutdown begins: it
			// does not say the connection closes.
			w.(http.Flusher).Flush()
			c := r.Context().Value(connKey{}).(*conn)
			started <- fmt.Sprintf("reader holds %d bytes, socket unread %v", c.br.Buffered(), unread(c.fd))
			<-release
		}
	})
	s := &Server{Handler: h, IdleTimeout: 10 * time.Minute}
	served, addr := serveTLSOwn(t, s)
	_, co, tc := dialCoalescing(t, addr)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	co.hold = true
	io.WriteString(tc, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	io.WriteString(tc, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := co.release(); err != nil {
		t.Fatal(err)
	}
	t.Logf("as /1 is handled: %s", <-started)

	shut := beginShutdown(t, s)
	close(release)

	br := bufio.NewReader(tc)
	for _, want := range []string{"/1", "/2"} {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("request %s, which arrived before Shutdown began, got no answer: %v", want, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	<-served
}

// serveTLSOwn serves s over NewTLSListener on a new listener, for a test
// that shuts it down itself: it returns Serve's result and the address.
func serveTLSOwn(t *testing.T, s *Server) (<-chan error, string) {
	t.Helper()
	s.init()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(NewTLSListener(ln, tlsConfig(t))) }()
	return served, ln.Addr().String()
}

// dialCoalescing dials addr over TLS through a coalescer: the socket, the
// coalescer and the TLS connection.
func dialCoalescing(t *testing.T, addr string) (net.Conn, *coalescer, *tls.Conn) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(time.Minute))
	co := &coalescer{Conn: raw}
	return raw, co, tls.Client(co, &tls.Config{InsecureSkipVerify: true})
}

// beginShutdown starts s's Shutdown and waits until it has begun; the
// channel gets its result.
func beginShutdown(t *testing.T, s *Server) <-chan error {
	t.Helper()
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	vstest.WaitFor(t, time.Minute, func() error {
		if !s.closing.Load() {
			return fmt.Errorf("shutdown has not begun")
		}
		return nil
	})
	return shut
}

// tlsConfig is a server's TLS configuration with a certificate for
// 127.0.0.1.
func tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	return &tls.Config{Certificates: []tls.Certificate{tlstest.Valid(t, t.TempDir(), "127.0.0.1").TLS}}
}

// TestTLSHijackAfterKeptAnswer: a connection from NewTLSListener whose
// first answer went out within the wait is then hijacked (a WebSocket over
// TLS): the handler reads and writes it from two goroutines at once, with
// the client sending while the server sends, and the probes of a tunnel
// are on beneath TLS.
func TestTLSHijackAfterKeptAnswer(t *testing.T) {
	probes := make(chan int, 1)
	done := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			io.WriteString(w, "kept")
			return
		}
		held := heldOf(r)
		nc, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer close(done)
		defer nc.Close()
		probes <- keepAliveOf(t, held.TCPConn)
		io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		wrote := make(chan struct{})
		go func() { // the server speaks while the client does
			defer close(wrote)
			for i := range 50 {
				fmt.Fprintf(nc, "s%02d\n", i)
			}
		}()
		for i := range 50 {
			line, err := rw.ReadString('\n')
			if err != nil || line != fmt.Sprintf("c%02d\n", i) {
				t.Errorf("line %d: %q, %v", i, line, err)
				break
			}
		}
		<-wrote
	})
	conn, br := dialTLSTo(t, startTLS(t, &Server{Handler: h, IdleTimeout: time.Minute}))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := read(t, br, "GET"); body != "kept" {
		t.Fatalf("got %q", body)
	}
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	if resp, _ := read(t, br, "GET"); resp.StatusCode != 101 {
		t.Fatalf("got %d, want 101", resp.StatusCode)
	}
	sent := make(chan error, 1)
	go func() {
		for i := range 50 {
			if _, err := fmt.Fprintf(conn, "c%02d\n", i); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for i := range 50 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("s%02d\n", i) {
			t.Fatalf("line %d: %q, %v", i, line, err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	<-done
	if p := <-probes; p != 1 {
		t.Fatalf("SO_KEEPALIVE %d beneath the hijacked TLS connection, want 1", p)
	}
}

// TestTLSShutdownServesARequestHalfArrived: Shutdown begins when part of
// a request's TLS record has arrived and been read by TLS (the record is
// larger than a segment: a request with large cookies over a real
// network). On a cleartext connection the reader holds a part of a head,
// and it is served; over TLS nothing showed it, and the connection was
// closed under it.
func TestTLSShutdownServesARequestHalfArrived(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}), IdleTimeout: 10 * time.Minute}
	served, addr := serveTLSOwn(t, s)
	raw, co, tc := dialCoalescing(t, addr)
	br := bufio.NewReader(tc)
	io.WriteString(tc, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := read(t, br, "GET"); body != "/1" {
		t.Fatalf("got %q, want /1", body)
	}
	co.hold = true
	io.WriteString(tc, "GET /2 HTTP/1.1\r\nHost: x\r\nCookie: "+strings.Repeat("c", 2000)+"\r\n\r\n")
	record := co.buf
	co.buf, co.hold = nil, false
	if _, err := raw.Write(record[:len(record)/2]); err != nil {
		t.Fatal(err)
	}
	// Once the server has read the first half (the socket holds none of
	// it), Shutdown begins; then the rest comes.
	waitConns(t, s, func(c *conn) bool { return c.state.Load() == stateIdle && !unread(c.fd) })
	shut := beginShutdown(t, s)
	if _, err := raw.Write(record[len(record)/2:]); err != nil {
		t.Fatalf("the rest of the request: %v", err)
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("a request half arrived when Shutdown began got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "/2" {
		t.Fatalf("got %d %q, want 200 /2", resp.StatusCode, body)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	<-served
}
