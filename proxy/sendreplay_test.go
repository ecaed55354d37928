package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A copy (Send) whose pooled connection the instance had let go goes once
// more on a new connection, by prod's rule: for a PUT read whole, with its
// whole body again, not what is left of it after the first attempt.
func TestACopySentAgainCarriesItsWholeBody(t *testing.T) {
	var mu sync.Mutex
	served := map[net.Conn]int{}
	p := New(Options{unsafeReuseWithin: time.Hour})
	body := strings.Repeat("0123456789", 100)
	got := make(chan string, 4)
	echo := bodyAnswerer(t, func(c net.Conn, r *http.Request, b []byte) bool {
		mu.Lock()
		served[c]++
		n := served[c]
		mu.Unlock()
		if n > 1 {
			return false // the second request on a connection: read, never answered
		}
		got <- r.Method + " " + string(b)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	p.Apply(table(1, nil, nil))
	send := func(method string, b []byte) error {
		r := &http.Request{Method: method, Host: "example.test", Header: http.Header{}, RemoteAddr: "127.0.0.1:1",
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		s, err := p.Send(context.Background(), r, "/", b, echo)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, s.Response.Body)
		s.Done(true)
		return nil
	}
	if err := send(http.MethodGet, nil); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "GET " {
		t.Fatalf("the instance got %q", g)
	}
	waitReusable(t, p, echo)
	if err := send(http.MethodPut, []byte(body)); err != nil {
		t.Fatalf("the PUT's copy failed: %v", err)
	}
	if g := <-got; g != "PUT "+body {
		t.Fatalf("the PUT's copy went again with %d bytes of body %q..., want its %d", len(g)-4, g[:min(len(g), 20)], len(body))
	}
}
