package h1

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// dialTLSTo dials addr over TLS (any certificate) and returns the
// connection and a reader on it.
func dialTLSTo(t *testing.T, addr string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

// heldOf returns the socket beneath the TLS connection a handler serves.
func heldOf(r *http.Request) *heldConn {
	return r.Context().Value(connKey{}).(*conn).held
}

// On a TLS connection from NewTLSListener, a keep-alive client's answers go
// out inside the wait for its next request (no read that finds nothing),
// each whole and in order.
func TestTLSAnswerGoesOutWithinTheWait(t *testing.T) {
	waits := make(chan int, 8)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held := heldOf(r)
		if held == nil {
			t.Error("a connection from NewTLSListener has no held socket")
			waits <- -1
		} else {
			waits <- held.waits
		}
		io.WriteString(w, r.URL.Path)
	})
	conn, br := dialTLSTo(t, startTLS(t, &Server{Handler: h, IdleTimeout: time.Minute}))
	const n = 5
	for i := range n {
		path := fmt.Sprintf("/%d", i)
		io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != path {
			t.Fatalf("request %d: got %d %q, want 200 %q", i, resp.StatusCode, body, path)
		}
		// Request i sees the answers before it sent within a wait.
		if got := <-waits; got != i {
			t.Fatalf("request %d: %d answers before it went out inside the wait for the next request, want %d", i, got, i)
		}
	}
}

// Two requests in one write (and one TLS record): the second is in TLS's
// buffer when the first is answered, so no read of the socket sends the
// kept answer; it must go out before the second's.
func TestTLSRequestsInOneRecordAreAnsweredInOrder(t *testing.T) {
	conn, br := dialTLSTo(t, startTLS(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}), IdleTimeout: time.Minute}))
	io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"/a", "/b"} {
		if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	// And the connection goes on as a kept one.
	io.WriteString(conn, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := read(t, br, "GET"); body != "/c" {
		t.Fatalf("got %q, want /c", body)
	}
}

// A client that closes its side while its request is handled (the close
// arrives before the wait begins, unseen by it) gets its answer, and its
// connection is closed soon after: not held until IdleTimeout.
func TestTLSClientThatClosesWhileHandledIsLetGo(t *testing.T) {
	closed := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-closed
		io.WriteString(w, "late")
	})
	s := &Server{Handler: h, IdleTimeout: 10 * time.Minute}
	addr := startTLS(t, s)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(time.Minute))
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	br := bufio.NewReader(tc)
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// Once the request is in (the handler holds it), close_notify and FIN.
	waitConns(t, s, func(c *conn) bool { return c.state.Load() == stateActive })
	tc.CloseWrite()
	raw.(*net.TCPConn).CloseWrite()
	close(closed)
	if _, body := read(t, br, "GET"); body != "late" {
		t.Fatalf("got %q, want the answer", body)
	}
	began := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the connection sent more after the answer")
	}
	t.Logf("closed %s after the answer (IdleTimeout %s)", time.Since(began), s.IdleTimeout)
	waitConns(t, s, nil)
}

// waitConns waits until s holds one connection and ok(it) is true, or,
// with ok nil, until it holds none.
func waitConns(t *testing.T, s *Server, ok func(*conn) bool) {
	t.Helper()
	vstest.WaitFor(t, time.Minute, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		good := false
		for c := range s.conns {
			good = ok != nil && ok(c)
		}
		if ok == nil && len(s.conns) == 0 || len(s.conns) == 1 && good {
			return nil
		}
		return fmt.Errorf("the server holds %d connections", len(s.conns))
	})
}
