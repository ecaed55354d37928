package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// keepAliveInstance is an HTTP/1.1 instance on a raw socket that keeps
// connections alive, answers each request with the number of the
// connection it came on, and counts what it accepted. With dropReused, its
// idle timeout fires on every kept-alive connection as the next request
// arrives on it: it closes the connection without answering, having read
// the request (the keep-alive race, made certain).
type keepAliveInstance struct {
	inst       *route.Instance
	accepted   atomic.Int64 // connections
	dropped    atomic.Int64 // requests it closed a kept-alive connection under
	dropReused bool
}

func newKeepAliveInstance(t *testing.T, dropReused bool) *keepAliveInstance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &keepAliveInstance{inst: route.NewInstance("blue", ln.Addr().String()), dropReused: dropReused}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := k.accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute)) // only ends a hung test
				br := bufio.NewReader(c)
				for served := 0; ; served++ {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r.Body)
					if served > 0 && k.dropReused {
						k.dropped.Add(1)
						return // read, and closed unanswered
					}
					body := fmt.Sprintf("conn %d", n)
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
			})
		}
	})
	return k
}

// idleConns waits until inst's pool holds n idle connections, each quiet
// for reuseQuiet (take hands out no other), and then makes each look put
// back, and its last request sent, age earlier than they were.
func idleConns(t *testing.T, p *Proxy, inst *route.Instance, n int, age time.Duration) {
	t.Helper()
	agePool(t, p, inst, n, age, age)
}

// agePool is idleConns with the ages of the put back (idle) and the last
// request sent (sent) apart.
func agePool(t *testing.T, p *Proxy, inst *route.Instance, n int, idle, sent time.Duration) {
	t.Helper()
	pl := p.poolFor(inst, nil)
	vstest.WaitFor(t, 10*time.Second, func() error {
		pl.mu.Lock()
		defer pl.mu.Unlock()
		if len(pl.idle) != n {
			return fmt.Errorf("%d idle connections, want %d", len(pl.idle), n)
		}
		for _, c := range pl.idle {
			if time.Since(c.idleSince) < reuseQuiet {
				return fmt.Errorf("a connection idle for %s only", time.Since(c.idleSince))
			}
		}
		for _, c := range pl.idle {
			c.idleSince = c.idleSince.Add(-idle)
			c.flushedAt = c.flushedAt.Add(-sent)
		}
		return nil
	})
}

// send sends method with body (none when empty) through the proxy and
// returns the status and body of the answer.
func send(t *testing.T, client *http.Client, url, method, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUnsafeRequestsAvoidConnectionsTheInstanceMayBeClosing: an instance
// closes a kept-alive connection when its idle timeout fires; a request
// already on the wire then meets the close, and one that may not be sent
// twice would be a 502. Such requests take only pooled connections whose
// last request went out within reuseUnsafeWithin; otherwise they go on a
// new connection, and the client gets the instance's answer. Idempotent requests still take the
// older connection and are sent again when it was dead.
func TestUnsafeRequestsAvoidConnectionsTheInstanceMayBeClosing(t *testing.T) {
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	t.Run("after the bound, on a new connection", func(t *testing.T) {
		k := newKeepAliveInstance(t, true)
		prod, p := proxyOf(t, Options{}, k.inst) // the default bound
		if code, body := send(t, client, prod, "GET", ""); code != 200 || body != "conn 1" {
			t.Fatalf("warm-up: %d %q", code, body)
		}
		// A connection that carried a body is not pooled again
		// (reuseAfter): pooled says which stay.
		steps := []struct {
			method, body string
			pooled       bool
		}{
			{"POST", "", true},        // not idempotent
			{"POST", "a body", false}, // nor this
			{"PUT", "a body", false},  // idempotent, but its body is read once
		}
		idle := 1
		for i, s := range steps {
			idleConns(t, p, k.inst, idle, reuseUnsafeWithin+time.Second)
			code, body := send(t, client, prod, s.method, s.body)
			if want := fmt.Sprintf("conn %d", i+2); code != 200 || body != want {
				t.Fatalf("%s %q: got %d %q, want %q: the answer on a new connection", s.method, s.body, code, body, want)
			}
			if d := k.dropped.Load(); d != 0 {
				t.Fatalf("%s %q: %d requests met a closing connection, want 0", s.method, s.body, d)
			}
			if s.pooled {
				idle++
			}
		}
		// A GET still takes the most recent of them: met closed, it is
		// sent again on a new connection.
		idleConns(t, p, k.inst, idle, reuseUnsafeWithin+time.Second)
		if code, body := send(t, client, prod, "GET", ""); code != 200 || body != fmt.Sprintf("conn %d", len(steps)+2) {
			t.Fatalf("GET: got %d %q", code, body)
		}
		if d := k.dropped.Load(); d != 1 {
			t.Fatalf("the GET met %d closing connections, want 1 (the pooled one it took)", d)
		}
		if f := p.Failed(route.Prod); f != 0 {
			t.Fatalf("failed = %d, want 0", f)
		}
	})

	t.Run("counted from the last request, not the put back", func(t *testing.T) {
		// A connection put back a moment ago whose last request went out
		// long before (a long answer, or one whose end sat in socket
		// buffers while a slow client took it): the instance may have
		// been idle all that time.
		k := newKeepAliveInstance(t, true)
		prod, p := proxyOf(t, Options{}, k.inst)
		if code, _ := send(t, client, prod, "GET", ""); code != 200 {
			t.Fatalf("warm-up: %d", code)
		}
		agePool(t, p, k.inst, 1, 0, reuseUnsafeWithin+time.Second)
		if code, body := send(t, client, prod, "POST", ""); code != 200 || body != "conn 2" {
			t.Fatalf("POST: got %d %q, want the answer on a new connection", code, body)
		}
		if d := k.dropped.Load(); d != 0 {
			t.Fatalf("%d requests met a closing connection, want 0", d)
		}
	})

	t.Run("a connection further down within the bound is taken", func(t *testing.T) {
		k := newKeepAliveInstance(t, false)
		prod, p := proxyOf(t, Options{unsafeReuseWithin: time.Hour}, k.inst)
		if code, body := send(t, client, prod, "GET", ""); code != 200 || body != "conn 1" {
			t.Fatalf("warm-up: %d %q", code, body)
		}
		idleConns(t, p, k.inst, 1, 2*time.Hour) // beyond the bound: the POST dials
		if code, body := send(t, client, prod, "POST", ""); code != 200 || body != "conn 2" {
			t.Fatalf("POST: got %d %q, want the answer on a new connection", code, body)
		}
		// conn 1 put back first, its request 5 s ago (within idleTimeout
		// too); conn 2 put back last, its request 2 hours ago: the POST
		// takes conn 1.
		idleConns(t, p, k.inst, 2, 0)
		pl := p.poolFor(k.inst, nil)
		pl.mu.Lock()
		now := time.Now()
		pl.idle[0].idleSince, pl.idle[0].flushedAt = now.Add(-5*time.Second), now.Add(-5*time.Second)
		pl.idle[1].flushedAt = now.Add(-2 * time.Hour)
		pl.mu.Unlock()
		if code, body := send(t, client, prod, "POST", ""); code != 200 || body != "conn 1" {
			t.Fatalf("POST: got %d %q, want the answer on conn 1", code, body)
		}
		if n := k.accepted.Load(); n != 2 {
			t.Fatalf("the instance accepted %d connections, want 2", n)
		}
	})

	t.Run("without the bound, the POST is a 502", func(t *testing.T) {
		// What the bound prevents: the same instance, with a POST on its
		// kept-alive connection. This shows the instance makes the race.
		k := newKeepAliveInstance(t, true)
		prod, p := proxyOf(t, Options{unsafeReuseWithin: time.Hour}, k.inst)
		if code, _ := send(t, client, prod, "GET", ""); code != 200 {
			t.Fatalf("warm-up: %d", code)
		}
		idleConns(t, p, k.inst, 1, reuseUnsafeWithin+time.Second)
		if code, _ := send(t, client, prod, "POST", ""); code != 502 || k.dropped.Load() != 1 {
			t.Fatalf("got %d after %d requests met a closing connection, want a 502 after 1", code, k.dropped.Load())
		}
	})

	t.Run("within the bound, the connection is reused", func(t *testing.T) {
		k := newKeepAliveInstance(t, false)
		// The bound as long as the test may take: what counts is that a
		// connection within it is reused, not how quick the test is.
		prod, p := proxyOf(t, Options{unsafeReuseWithin: time.Hour}, k.inst)
		// The last one carries a body: its connection is not pooled again.
		for i, s := range []struct{ method, body string }{{"GET", ""}, {"POST", ""}, {"PUT", "a body"}} {
			if i > 0 {
				idleConns(t, p, k.inst, 1, 0)
			}
			if code, body := send(t, client, prod, s.method, s.body); code != 200 || body != "conn 1" {
				t.Fatalf("%s %q: got %d %q, want the answer on the first connection", s.method, s.body, code, body)
			}
		}
		if n := k.accepted.Load(); n != 1 {
			t.Fatalf("the instance accepted %d connections, want 1", n)
		}
	})
}
