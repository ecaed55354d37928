package h1

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"
)

// goroutineID returns the calling goroutine's number, from its trace.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	return string(bytes.Fields(buf)[1])
}

// waitIdleWorkers waits until n goroutines wait for a connection.
func waitIdleWorkers(t *testing.T, s *Server, n int32) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.idleWorkers.Load() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines wait for a connection, want %d", s.idleWorkers.Load(), n)
		}
		runtime.Gosched()
	}
}

// TestConnectionsReuseGoroutines: a connection that comes while a
// goroutine that served another waits is served on that goroutine, and the
// goroutine goes when none comes within workerIdle. (A busy machine may
// let the goroutine's wait run out between two connections: the reuse is
// tried a few times, and a server that never reuses fails every time.)
func TestConnectionsReuseGoroutines(t *testing.T) {
	ids := make(chan string, 8)
	s, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ids <- goroutineID()
		w.Header().Set("Connection", "close")
	})})
	serveOne := func() string {
		c, br := dial(t, addr)
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		read(t, br, "GET")
		c.Close()
		return <-ids
	}
	reused := false
	for try := 0; try < 5 && !reused; try++ {
		first := serveOne()
		for deadline := time.Now().Add(workerIdle / 2); s.idleWorkers.Load() == 0 && time.Now().Before(deadline); {
			runtime.Gosched()
		}
		second := serveOne()
		reused = second == first
		t.Logf("try %d: goroutines %s then %s", try, first, second)
	}
	if !reused {
		t.Fatal("no connection was served on the goroutine that served the one before and waited")
	}
	waitIdleWorkers(t, s, 0) // workerIdle passed
}

// TestIdleWorkersAreBounded: after a burst of connections, no more than
// maxIdleWorkers goroutines stay to wait for more.
func TestIdleWorkersAreBounded(t *testing.T) {
	const burst = maxIdleWorkers + 44
	var wg sync.WaitGroup
	wg.Add(burst)
	release := make(chan struct{})
	s, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Done()
		<-release // every connection in use at once
		w.Header().Set("Connection", "close")
	})})
	var clients sync.WaitGroup
	for range burst {
		c, br := dial(t, addr)
		clients.Add(1)
		go func() {
			defer clients.Done()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp, err := http.ReadResponse(br, nil); err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	close(release)
	clients.Wait()
	// Watched until they have gone (workerIdle): never more than the bound.
	most := int32(0)
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		n := s.idleWorkers.Load()
		most = max(most, n)
		if n > maxIdleWorkers {
			t.Fatalf("%d goroutines wait, more than %d", n, maxIdleWorkers)
		}
		if n == 0 && most > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still wait (at most %d)", n, most)
		}
	}
	t.Logf("at most %d goroutines waited after %d connections", most, burst)
}
