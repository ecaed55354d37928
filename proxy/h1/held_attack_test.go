package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
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
	s.init()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(NewTLSListener(ln, tlsConfig(t))) }()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(time.Minute))
	co := &coalescer{Conn: raw}
	tc := tls.Client(co, &tls.Config{InsecureSkipVerify: true})
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

// tlsConfig is a server's TLS configuration with a certificate for
// 127.0.0.1.
func tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	return &tls.Config{Certificates: []tls.Certificate{tlstest.Valid(t, t.TempDir(), "127.0.0.1").TLS}}
}
