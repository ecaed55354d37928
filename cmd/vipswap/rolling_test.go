package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/etcdtest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// front is a TCP front of vipswap nodes, as an L4 balancer is: each client
// connection goes to the next node in turn that is in the front; a node
// that refuses the connection is skipped for the next one.
type front struct {
	ln       net.Listener
	backends []string
	in       []atomic.Bool  // in the front
	conns    []atomic.Int64 // connections given to each node
	open     []atomic.Int64 // connections open to each node
	next     atomic.Uint64
	wg       sync.WaitGroup
}

func startFront(t *testing.T, backends []string) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &front{ln: ln, backends: backends, in: make([]atomic.Bool, len(backends)), conns: make([]atomic.Int64, len(backends)), open: make([]atomic.Int64, len(backends))}
	for i := range f.in {
		f.in[i].Store(true)
	}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

// serve pipes c to a node, the next in turn that accepts the connection.
func (f *front) serve(c net.Conn) {
	defer c.Close()
	first := int(f.next.Add(1))
	for try := range f.backends {
		i := (first + try) % len(f.backends)
		if !f.in[i].Load() {
			continue
		}
		b, err := net.DialTimeout("tcp", f.backends[i], 5*time.Second)
		if err != nil {
			continue // refused: the next node
		}
		f.conns[i].Add(1)
		f.open[i].Add(1)
		defer f.open[i].Add(-1)
		defer b.Close()
		done := make(chan struct{})
		go func() {
			io.Copy(b, c)
			b.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		io.Copy(c, b)
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now()) // the client may keep its half open
		<-done
		return
	}
}

// TestClusterRolling: two nodes on one etcd behind a front that spreads
// connections across them; each node in turn is taken out of the front
// and drained there (no connection open to it), restarted (SIGTERM, then a new vipswap on the same configuration) and
// put back once it serves, as docs/operations.md says. The restarted node
// serves the slot the cluster's state holds; through the front, 0 requests
// fail.
func TestClusterRolling(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	_, addrs := startStatic(t, 1)
	const n = 2
	prods, dirs, cfgs := make([]string, n), make([]string, n), make([]string, n)
	nodes := make([]*switchtest.Switch, n)
	var wg sync.WaitGroup
	for i := range n {
		prods[i], dirs[i] = vstest.FreeAddr(t), t.TempDir()
		cfgs[i] = strings.Replace(clusterConfig(dirs[i], etcd.Endpoint, "/roll/", staticSlots(addrs)), "prod: 127.0.0.1:0", "prod: "+prods[i], 1)
		wg.Go(func() { nodes[i] = switchtest.Serve(t, dirs[i], cfgs[i]) })
	}
	wg.Wait()
	for _, sw := range nodes {
		if sw == nil {
			t.FailNow()
		}
		sw.WaitHealthy(t)
	}
	// The stored state differs from the files' active: blue.
	ctx := context.Background()
	if _, err := nodes[0].Client.Swap(ctx, wire.ChangeRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, sw := range nodes {
		vstest.WaitFor(t, 30*time.Second, func() error {
			if a := sw.Active(t); a != "green" {
				return fmt.Errorf("%s: active %s, want green", sw.Admin, a)
			}
			return nil
		})
	}

	f := startFront(t, prods)
	const clients = 8
	load := startConnLoad("http://"+f.ln.Addr().String()+"/api/test", clients, 3*time.Minute)
	defer load.stop()
	waitOKs(t, load, 200)
	for i := range n {
		// Out of the front, and drained there: a connection the front
		// made just before may still be in the node's listen queue, which
		// closes with its listener.
		f.in[i].Store(false)
		vstest.WaitFor(t, 30*time.Second, func() error {
			if n := f.open[i].Load(); n != 0 {
				return fmt.Errorf("%d connections still open to node %d", n, i)
			}
			return nil
		})
		nodes[i].Signal(t, syscall.SIGTERM)
		nodes[i].Wait(t, 60*time.Second)
		nodes[i] = switchtest.Serve(t, dirs[i], cfgs[i])
		nodes[i].WaitHealthy(t)
		if a := nodes[i].Active(t); a != "green" {
			t.Fatalf("node %d restarted: active %s, want green (the cluster's state)", i, a)
		}
		before := f.conns[i].Load()
		f.in[i].Store(true)
		vstest.WaitFor(t, 30*time.Second, func() error {
			if got := f.conns[i].Load() - before; got < 100 {
				return fmt.Errorf("node %d took %d connections since it was put back, want 100", i, got)
			}
			return nil
		})
	}
	load.stop()
	t.Logf("rolling restart of %d nodes behind a front, %d clients (a new connection per request): %d answered, %d refused, %d failed; connections per node %d, %d; longest wait %s; failures %v",
		n, clients, load.ok, load.refused, load.failed, f.conns[0].Load(), f.conns[1].Load(), load.longest.Round(time.Millisecond), load.errs)
	if load.refused+load.failed != 0 {
		t.Fatalf("%d refused and %d failed through the front, want 0", load.refused, load.failed)
	}
}
