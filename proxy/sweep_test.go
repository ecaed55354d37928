package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// Idle instance connections that the instance closed leave the pool
// without waiting for a request to find them, and so do those idle past
// idleTimeout: none holds a descriptor for nothing.
func TestIdleInstanceConnectionsAreSwept(t *testing.T) {
	closeNow := make(chan struct{})
	inst := route.NewInstance("blue", vstest.Serve(t, func(c net.Conn) {
		go func() {
			<-closeNow // then it closes the connections the proxy keeps
			c.Close()
		}()
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}))
	prod, p := proxyOf(t, Options{sweepEvery: 20 * time.Millisecond}, inst)
	for range 4 {
		resp, err := http.Get(prod)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	}
	if n := p.idle.Load(); n == 0 {
		t.Fatal("no connection pooled")
	}
	close(closeNow)
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := p.idle.Load(); n != 0 {
			return fmt.Errorf("%d closed connections still pooled", n)
		}
		return nil
	})

	// Past idleTimeout, a connection leaves the pool alive or not.
	pl := p.poolFor(inst, nil)
	c, err := p.conn(t.Context(), inst, nil, true, false, 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pl.put(c)
	if gone := pl.sweep(time.Now(), time.Hour); len(gone) != 0 {
		t.Fatalf("a connection idle for a moment swept: %d", len(gone))
	}
	gone := pl.sweep(time.Now().Add(idleTimeout+time.Second), time.Hour)
	if len(gone) != 1 || gone[0] != c || p.idle.Load() != 0 {
		t.Fatalf("past idleTimeout: %d swept, %d left pooled; want the one", len(gone), p.idle.Load())
	}
	c.Close()
}

// The sweep runs beside requests taking and giving back pooled
// connections (every millisecond here, while the instance closes some
// connections after answering): it never closes one a request holds, and
// the race detector sees nothing. Every request is answered.
func TestTheSweepLeavesConnectionsInUseAlone(t *testing.T) {
	inst := route.NewInstance("blue", vstest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for n := 1; ; n++ {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if n%3 == 0 {
				c.Close() // unannounced: the pooled connection is dead
				return
			}
		}
	}))
	prod, p := proxyOf(t, Options{sweepEvery: time.Millisecond}, inst)
	const clients, each = 6, 100
	errs := make(chan error, clients)
	for range clients {
		go func() {
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for i := range each {
				method := http.MethodGet
				if i%2 == 1 {
					method = http.MethodPut
				}
				req, _ := http.NewRequest(method, prod, strings.NewReader("body"))
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("%s: %d %s", method, resp.StatusCode, b)
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if f := p.Failed(route.Prod); f != 0 {
		t.Fatalf("%d requests failed", f)
	}
}
