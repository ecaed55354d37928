package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vipswap/vipswap/route"
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
	send := func(method string) (int, string) {
		req, _ := http.NewRequest(method, prod, strings.NewReader(strings.Repeat("b", 1000)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
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
