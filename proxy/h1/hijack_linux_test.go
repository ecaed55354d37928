//go:build linux

package h1

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAFailedHijackLeavesTheConnectionToTheServer: a hijack that cannot
// send what was buffered before it (here the 100 Continue of a client that
// reset its connection) fails, and the connection stays the server's: it
// is closed and forgotten, and Shutdown does not wait for it.
func TestAFailedHijackLeavesTheConnectionToTheServer(t *testing.T) {
	entered, reset := make(chan struct{}), make(chan struct{})
	hijackErr := make(chan error, 1)
	s, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-reset
		io.ReadAll(r.Body) // sends the 100 Continue to a connection reset
		_, _, err := w.(http.Hijacker).Hijack()
		hijackErr <- err
	})})
	release := sync.OnceFunc(func() { close(reset) })
	t.Cleanup(release) // before start's Shutdown: a failed test leaves no handler waiting
	c, _ := dial(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	// The reset comes once the server read the request: before, it could
	// close the connection unread (or not have accepted it yet).
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the handler")
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset
	// The server sees the reset once its socket reports it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.mu.Lock()
		var sc *conn
		for x := range s.conns {
			sc = x
		}
		s.mu.Unlock()
		if sc == nil {
			t.Fatal("no connection")
		}
		var code int
		if rc, err := sc.nc.(syscall.Conn).SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { code, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR) })
		}
		if code != 0 || time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
	}
	release()
	if err := <-hijackErr; err == nil {
		t.Fatal("the hijack of a reset connection succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (it waited for the connection whose hijack failed)", err)
	}
}
