package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// loopbackPair returns the two ends of a TCP connection on 127.0.0.1.
func loopbackPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := vstest.TCPPair(t)
	a.SetDeadline(time.Now().Add(10 * time.Second))
	b.SetDeadline(time.Now().Add(10 * time.Second))
	return a, b
}

// An answer may be out whole before its handler returns: a body larger
// than the connection's buffer goes out at once (the proxy writes an
// instance's large body so), as does one the handler flushed. Its client
// then sends its next request while the handler still works (counting,
// logging, a mirror), which is no pipelining: that request must be read
// when the handler returns, not after a wait that ends at parkAfter with
// the connection taken for a pipelining one.
//
// The handler's work after the answer here is a read on another
// connection, woken by the poller once the client has sent its next
// request: the poller then reports that request's bytes too, before the
// server waits for them.
func TestARequestSentAfterAWholeAnswerIsReadAtOnce(t *testing.T) {
	for _, how := range []string{"large body", "flushed"} {
		t.Run(how, func(t *testing.T) {
			side, work := loopbackPair(t)
			var taken atomic.Int32 // requests served as pipelined
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c := r.Context().Value(connKey{}).(*conn)
				if c.pipelined {
					taken.Add(1)
				}
				body := r.URL.Path
				if r.URL.Path == "/whole" {
					body = strings.Repeat("x", 64<<10)
					if how == "flushed" {
						body = body[:100]
					}
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				io.WriteString(w, body)
				if r.URL.Path == "/whole" {
					if how == "flushed" {
						w.(http.Flusher).Flush()
					}
					var b [1]byte
					if _, err := work.Read(b[:]); err != nil {
						t.Errorf("the handler's work: %v", err)
					}
				}
			})
			_, addr := start(t, &Server{Handler: h})
			conn, br := dial(t, addr)
			const rounds = 3
			var longest time.Duration
			for i := range rounds {
				io.WriteString(conn, "GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
				if resp, _ := read(t, br, "GET"); resp.StatusCode != 200 {
					t.Fatalf("round %d: %d", i, resp.StatusCode)
				}
				// The answer is whole: the next request, then the end of
				// the handler's work.
				began := time.Now()
				io.WriteString(conn, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				side.Write([]byte{1})
				if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != "/next" {
					t.Fatalf("round %d: got %d %q, want 200 /next", i, resp.StatusCode, body)
				}
				longest = max(longest, time.Since(began))
			}
			if n := taken.Load(); n > 0 {
				t.Errorf("a client that sent each request after its answer before was taken for a pipelining one (%d of %d requests); the longest wait for an answer after a whole answer: %s",
					n, 2*rounds, longest)
			}
			t.Logf("longest wait for an answer after a whole answer: %s", longest)
		})
	}
}

// A request pipelined while the one before was handled waits in the
// socket, missed by the poller, until parkAfter ends the wait (see
// sendAndAwait and sendAndAwaitTLS): it is served then, on cleartext and
// TLS connections. It had arrived before Shutdown began, as one read at
// once would have been: Shutdown must not close the connection under it,
// as if the connection had been idle, but let it be answered (and then
// close). The handler's work is a read on another connection, woken by the
// poller once the client has sent its next request: the poller reports that
// request's bytes too, before the server waits for them.
func TestShutdownServesARequestPipelinedBeforeIt(t *testing.T) {
	for _, transport := range []string{"cleartext", "TLS"} {
		for _, shutdown := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/shutdown=%v", transport, shutdown), func(t *testing.T) {
				side, work := loopbackPair(t)
				reading := make(chan struct{}, 1)
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/1" {
						reading <- struct{}{}
						var b [1]byte
						if _, err := work.Read(b[:]); err != nil {
							t.Errorf("the handler's work: %v", err)
						}
					}
					io.WriteString(w, r.URL.Path)
				})
				s := &Server{Handler: h, IdleTimeout: 10 * time.Minute}
				var conn net.Conn
				var br *bufio.Reader
				if transport == "TLS" {
					conn, br = dialTLSTo(t, startTLS(t, s))
				} else {
					_, addr := start(t, s)
					conn, br = dial(t, addr)
				}
				began := time.Now()
				io.WriteString(conn, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
				<-reading
				io.WriteString(conn, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
				side.Write([]byte{1})
				if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != "/1" {
					t.Fatalf("got %d %q, want 200 /1", resp.StatusCode, body)
				}
				// The answer to /1 is out, with /2 in the server's socket
				// since before it was.
				shut := make(chan error, 1)
				if shutdown {
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						defer cancel()
						shut <- s.Shutdown(ctx)
					}()
				}
				resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
				if err != nil {
					t.Fatalf("the request sent before the answer to the one before got no answer: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != "/2" {
					t.Fatalf("got %d %q, want 200 /2", resp.StatusCode, body)
				}
				t.Logf("both answered in %s", time.Since(began))
				if shutdown {
					if err := <-shut; err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}
