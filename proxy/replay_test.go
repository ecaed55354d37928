package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
	"golang.org/x/net/http2"
)

// A body vipswap read whole before forwarding (up to request_buffer) goes
// again when the instance dropped the request after reading it: for a
// method that may be sent twice. A POST is not sent twice.
func TestABufferedBodyGoesAgainForAnIdempotentRequest(t *testing.T) {
	var seen atomic.Int64
	var drop atomic.Bool
	answer := func(c net.Conn, r *http.Request) bool {
		seen.Add(1)
		if drop.CompareAndSwap(true, false) {
			return false // read whole, then the connection closed without an answer
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	}
	prod, p := proxyOf(t, Options{}, rawAnswerer(t, answer), rawAnswerer(t, answer))
	send := func(method string) (int, string) { return sendBody(t, method, prod, strings.Repeat("b", 1000)) }
	drop.Store(true)
	if code, body := send(http.MethodPut); code != 200 || body != "ok" || seen.Load() != 2 {
		t.Fatalf("PUT: %d %q after %d arrivals, want 200 after 2 (sent again)", code, body, seen.Load())
	}
	seen.Store(0)
	drop.Store(true)
	if code, _ := send(http.MethodPost); code != http.StatusBadGateway || seen.Load() != 1 {
		t.Fatalf("POST: %d after %d arrivals, want a 502 after 1 (never sent twice)", code, seen.Load())
	}
	if f := p.Failed(route.Prod); f != 1 {
		t.Fatalf("failed = %d, want the POST's 1", f)
	}
}

// An instance shutting down answers a 503 asking to close the connection
// (slotapp does) without acting on the request: a GET goes to another
// instance, and so does a PUT whose body vipswap read whole before
// forwarding, with that whole body. A POST gets the 503.
func TestABufferedBodyGoesAgainAfterAShuttingDownAnswer(t *testing.T) {
	var seen atomic.Int64
	var shutting atomic.Bool
	body := strings.Repeat("b", 1000)
	answer := func(c net.Conn, r *http.Request, got []byte) bool {
		seen.Add(1)
		if shutting.CompareAndSwap(true, false) {
			io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 14\r\n\r\nshutting down\n")
			return false
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(got))+"\r\n\r\n")
		c.Write(got) // the body it got, as the answer's
		return true
	}
	prod, _ := proxyOf(t, Options{}, bodyAnswerer(t, answer), bodyAnswerer(t, answer))
	send := func(method string) (int, string) { return sendBody(t, method, prod, body) }
	shutting.Store(true)
	if code, b := send(http.MethodPut); code != 200 || b != body || seen.Load() != 2 {
		t.Fatalf("PUT: %d with %d bytes of body after %d arrivals, want 200 with its %d after 2 (sent to the other instance)", code, len(b), seen.Load(), len(body))
	}
	seen.Store(0)
	shutting.Store(true)
	if code, _ := send(http.MethodPost); code != http.StatusServiceUnavailable || seen.Load() != 1 {
		t.Fatalf("POST: %d after %d arrivals, want the 503 after 1 (never sent twice)", code, seen.Load())
	}
}

// bodyAnswerer is an instance that reads each request whole and answers
// as answer says (false: it closes the connection), given the body.
func bodyAnswerer(t *testing.T, answer func(c net.Conn, r *http.Request, body []byte) bool) *route.Instance {
	t.Helper()
	return route.NewInstance("blue", vstest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, err := io.ReadAll(r.Body)
			if err != nil || !answer(c, r, b) {
				return
			}
		}
	}))
}

// The same over HTTP/2 (h2c) instances: the first to get the request
// reads its body whole and closes the connection without an answer. The
// PUT goes to the other instance with its whole body (the transport's
// goroutine reads it no more once the attempt failed: -race says so); the
// POST is not sent again.
func TestABufferedBodyGoesAgainToAnHTTP2Instance(t *testing.T) {
	var seen atomic.Int64
	var drop atomic.Bool
	got := make(chan string, 4)
	h2inst := func() *route.Instance {
		return route.NewInstance("blue", vstest.Serve(t, func(c net.Conn) {
			//lint:ignore SA1019 the test closes the raw connection under a stream, which http.Server's own HTTP/2 gives no hold of
			(&http2.Server{}).ServeConn(c, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err != nil {
					return
				}
				seen.Add(1)
				if drop.CompareAndSwap(true, false) {
					c.Close() // read whole, then the connection closed without an answer
					return
				}
				got <- r.Method + " " + string(b)
				io.WriteString(w, "ok")
			})})
		}))
	}
	body := strings.Repeat("0123456789", 1000)
	_, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{}, h2inst(), h2inst())
	send := func(method string) int {
		code, _ := sendBody(t, method, prod, body)
		return code
	}
	drop.Store(true)
	if code := send(http.MethodPut); code != 200 || seen.Load() != 2 {
		t.Fatalf("PUT: %d after %d arrivals, want 200 after 2 (sent again)", code, seen.Load())
	}
	if g := <-got; g != "PUT "+body {
		t.Fatalf("the PUT went again with %d bytes of body, want its %d", len(g)-4, len(body))
	}
	seen.Store(0)
	drop.Store(true)
	if code := send(http.MethodPost); code != http.StatusBadGateway || seen.Load() != 1 {
		t.Fatalf("POST: %d after %d arrivals, want a 502 after 1 (never sent twice)", code, seen.Load())
	}
}

// sendBody sends method to url with body, and returns the answer's status
// and body.
func sendBody(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
