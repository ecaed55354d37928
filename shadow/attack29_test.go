package shadow_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/shadow"
)

// upgradingTarget is a raw HTTP/1.1 instance that answers a request asking
// for an upgrade with 101 and then speaks no more HTTP on the connection
// (a WebSocket server would speak frames), and any other request with
// "ok". It counts the upgrade requests it got.
func upgradingTarget(t *testing.T) (addr string, upgrades *atomic.Int64) {
	t.Helper()
	upgrades = new(atomic.Int64)
	addr = vstest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if req.Header.Get("Upgrade") != "" {
				upgrades.Add(1)
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				io.Copy(io.Discard, c) // frames from here on: no HTTP answer ever again
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return addr, upgrades
}

// TestARequestAskingForAnUpgradeIsNotCopied: a client asks prod for a
// WebSocket; prod's version declines (200). The copy must not ask the
// target for the upgrade ("never an upgrade"): a target that accepts it
// would answer 101, the copy would read an empty answer "whole", and the
// switched connection would go back to the pool, where the next request
// to that instance (a copy, or stage's own) waits for an HTTP answer that
// never comes.
func TestARequestAskingForAnUpgradeIsNotCopied(t *testing.T) {
	green, upgrades := upgradingTarget(t)
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	}, green, shadow.Options{MaxConns: 1, Timeout: 2 * time.Second})
	r.start(100, []string{"GET"})
	const n = 4
	failed := r.load(t, n, 1, 200, func(i int) *http.Request {
		req := r.get("/ws")(i)
		if i == 0 {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
		}
		return req
	})
	if failed != 0 {
		t.Fatalf("%d prod requests failed", failed)
	}
	// Tap runs before prod's answer goes out: every copy is sampled by now.
	f := r.settled(t, r.m.Figures().Sampled)
	if upgrades.Load() != 0 || f.Error != 0 {
		t.Errorf("the target was asked for %d upgrades; copies: same %d, error %d (samples %+v): want no upgrade asked and no error",
			upgrades.Load(), f.Same, f.Error, f.Samples)
	}
}

// TestHostileTargetAnswersNeverReachAnotherCopy: a target that sends more
// than its Content-Length (a second answer after the first), a storm of
// 1xx heads, a body cut short, or a head dripped a byte at a time: prod
// loses nothing, and no copy is compared with an answer meant for another
// request (the smuggled "evil!" never shows).
func TestHostileTargetAnswersNeverReachAnotherCopy(t *testing.T) {
	const ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
	const evil = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nevil!"
	cases := []struct {
		name  string
		serve func(c net.Conn)
	}{
		// In one write: a second answer sent later is indistinguishable
		// from an answer to the next request once reuseQuiet has passed
		// (the proxy's documented bound), for copies as for stage's own.
		{"smuggles a second answer", func(c net.Conn) {
			for readHead(c) {
				io.WriteString(c, ok+evil)
			}
		}},
		{"a storm of 1xx", func(c net.Conn) {
			if !readHead(c) {
				return
			}
			for {
				if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
					return
				}
			}
		}},
		{"cuts its body short", func(c net.Conn) {
			if readHead(c) {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nok")
			}
		}},
		{"drips its head", func(c net.Conn) {
			for readHead(c) {
				for i := range len(ok) {
					if _, err := c.Write([]byte{ok[i]}); err != nil {
						return
					}
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := vstest.Serve(t, tc.serve)
			r := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, "ok")
			}, addr, shadow.Options{MaxConns: 1, QueueSize: 64, Timeout: time.Second, StopErrorRate: 2})
			r.start(100, []string{"GET"})
			const n = 8
			if failed := r.load(t, n, 1, 200, r.get("/")); failed != 0 {
				t.Errorf("%d prod requests failed, want 0", failed)
			}
			f := r.settled(t, n)
			for _, d := range f.Samples {
				if strings.Contains(d.Target, "evil") {
					t.Errorf("a copy was compared with an answer meant for another request: %+v", d)
				}
			}
			t.Logf("same %d, differ %d, error %d, dropped %v", f.Same, f.Differ, f.Error, f.Dropped)
		})
	}
}

// TestACopyOnAConnectionTheTargetLetGoGoesOnANewOne: a target that
// answers one request per connection (without saying so) and closes the
// connection as the next request arrives, unanswered, is the idle close
// that crosses a request on the wire. That says nothing about the target:
// each copy that met it goes once more, on a new connection, as prod's
// requests do, and is compared, never an error.
func TestACopyOnAConnectionTheTargetLetGoGoesOnANewOne(t *testing.T) {
	var conns atomic.Int64
	green := vstest.Serve(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
		http.ReadRequest(br) // the next one is read, and the connection closed unanswered
	})
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	}, green, shadow.Options{MaxConns: 1})
	r.start(100, []string{"GET"})
	const n = 6
	for i := range n { // one at a time: each copy finds the last one's connection pooled
		if failed := r.load(t, 1, 1, 200, r.get("/")); failed != 0 {
			t.Fatalf("%d prod requests failed", failed)
		}
		r.settled(t, uint64(i+1))
	}
	if f := r.settled(t, n); f.Same != n || f.Error != 0 {
		t.Errorf("same %d, error %d (samples %+v), want %d compared alike", f.Same, f.Error, f.Samples, n)
	}
	t.Logf("the target took %d connections for %d copies", conns.Load(), n)
}
