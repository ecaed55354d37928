package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/etcdtest"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/etcd"
	"github.com/vipswap/vipswap/store/storetest"
)

var prefixes atomic.Int64

// open returns a store on its own prefix of srv, so the suite's stores
// start empty.
func open(t *testing.T, srv *etcdtest.Etcd, r store.Retention) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(etcd.Options{Endpoints: []string{srv.Endpoint}, Prefix: fmt.Sprintf("/test-%d/", prefixes.Add(1)), Retention: r, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t)
	storetest.Run(t, func(t *testing.T, r store.Retention) store.Store { return open(t, srv, r) })
}

// TestUnreachable: with etcd gone, every call fails within the request
// timeout with an error that says the store is unreachable; when it is
// back, the same store works again and a watch resumes.
func TestUnreachable(t *testing.T) {
	srv := etcdtest.Start(t)
	s := open(t, srv, store.Retention{})
	defer s.Close()
	ctx := context.Background()
	rev, _, err := s.CompareAndSwap(ctx, 0, state.State{Active: "blue", Standby: "green"}, store.Entry{Operation: "seed", Result: store.Applied})
	if err != nil {
		t.Fatal(err)
	}
	events := s.Watch(ctx)
	srv.Kill(t)
	start := time.Now()
	_, _, err = s.CompareAndSwap(ctx, rev, state.State{Active: "green", Standby: "blue"}, store.Entry{Operation: "swap", Result: store.Applied})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a swap with etcd down: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("a swap with etcd down took %s to fail; the request timeout is 1s", took)
	}
	t.Logf("with etcd down: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	if _, _, err := s.Load(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Load with etcd down: %v", err)
	}
	srv.Start(t)
	var next store.Revision
	deadline := time.Now().Add(20 * time.Second)
	for {
		next, _, err = s.CompareAndSwap(ctx, rev, state.State{Active: "green", Standby: "blue"}, store.Entry{Operation: "swap", Result: store.Applied})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd is back, the swap still fails: %v", err)
		}
	}
	select {
	case ev := <-events:
		if ev.Revision != next {
			t.Fatalf("watch after recovery: revision %d, want %d", ev.Revision, next)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the watch saw nothing after etcd came back")
	}
}
