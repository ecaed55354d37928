package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// start empty. Its request timeout only ends a call etcd never answers: a
// busy machine's etcd may take over a second to write.
func open(t *testing.T, srv *etcdtest.Etcd, r store.Retention) *etcd.Store {
	t.Helper()
	return openAt(t, srv, fmt.Sprintf("/test-%d/", prefixes.Add(1)), r, 10*time.Second)
}

// openAt returns a store on prefix of srv whose requests give up after
// timeout.
func openAt(t *testing.T, srv *etcdtest.Etcd, prefix string, r store.Retention, timeout time.Duration) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(etcd.Options{Endpoints: []string{srv.Endpoint}, Prefix: prefix, Retention: r, RequestTimeout: timeout})
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
	// Seeded through a patient store: only the outage's calls are meant
	// to end at the short request timeout.
	seeder := open(t, srv, store.Retention{})
	ctx := context.Background()
	rev, _, err := seeder.CompareAndSwap(ctx, 0, state.State{Active: "blue", Standby: "green"}, store.Entry{Operation: "seed", Result: store.Applied})
	seeder.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := openAt(t, srv, seeder.Prefix(), store.Retention{}, time.Second)
	defer s.Close()
	events := s.Watch(ctx)
	srv.Kill(t)
	start := time.Now()
	// Far beyond the store's own 1s request timeout: the store must give
	// up by itself, with ErrUnavailable, not by this deadline.
	within, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, _, err = s.CompareAndSwap(within, rev, state.State{Active: "green", Standby: "blue"}, store.Entry{Operation: "swap", Result: store.Applied})
	cancel()
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a swap with etcd down: %v, want ErrUnavailable", err)
	}
	t.Logf("with etcd down: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
	if _, _, err := s.Load(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Load with etcd down: %v", err)
	}
	srv.Start(t)
	var next store.Revision
	deadline := time.Now().Add(time.Minute) // retries of 1 s each until then
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
	case <-time.After(time.Minute):
		t.Fatal("the watch saw nothing after etcd came back")
	}
}

// TestDamagedKeys: keys edited by hand or restored in part are refused
// with an error naming the key, never overwrite history, and one damaged
// history entry does not hide the others.
func TestDamagedKeys(t *testing.T) {
	srv := etcdtest.Start(t)
	s := open(t, srv, store.Retention{MaxEntries: 10})
	defer s.Close()
	ctx := context.Background()
	blue, green := state.State{Active: "blue", Standby: "green"}, state.State{Active: "green", Standby: "blue"}
	rev, _, err := s.CompareAndSwap(ctx, 0, blue, store.Entry{Operation: "seed", Result: store.Applied})
	if err != nil {
		t.Fatal(err)
	}
	if rev, _, err = s.CompareAndSwap(ctx, rev, green, store.Entry{Operation: "swap", Result: store.Applied}); err != nil {
		t.Fatal(err)
	}
	kv := s.Client()

	// The history counter set back: the next change must not overwrite
	// entry 1.
	if _, err := kv.Put(ctx, s.Prefix()+"seq", "0"); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.CompareAndSwap(ctx, rev, blue, store.Entry{Operation: "swap", Result: store.Applied})
	if err == nil || !strings.Contains(err.Error(), "counter") || errors.Is(err, store.ErrUnavailable) || strings.Contains(err.Error(), "decided") {
		t.Fatalf("a change with the counter set back: %v; want a refusal naming the counter", err)
	}
	if e, err := s.Entry(ctx, 1); err != nil || e.Operation != "seed" {
		t.Fatalf("entry 1 after the refused change: %+v, %v; want the seed, untouched", e, err)
	}
	if st, got, err := s.Load(ctx); err != nil || got != rev || st.Active != "green" {
		t.Fatalf("state after the refused change: %+v at %d, %v", st, got, err)
	}
	if _, err := kv.Put(ctx, s.Prefix()+"seq", "not a number"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, store.Entry{Operation: "swap", Result: store.Refused}); err == nil || !strings.Contains(err.Error(), s.Prefix()+"seq") {
		t.Fatalf("recording with an unreadable counter: %v; want an error naming the key", err)
	}
	if _, err := kv.Put(ctx, s.Prefix()+"seq", "2"); err != nil {
		t.Fatal(err)
	}

	// One unreadable history entry, and a key that is no entry's.
	if _, err := kv.Put(ctx, fmt.Sprintf("%shistory/%020d", s.Prefix(), 1), "{garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, s.Prefix()+"history/zzz", "x"); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(ctx, 0)
	if err != nil || len(h) != 3 || h[1].Operation != "swap" || h[2].Operation != "unreadable" || h[2].ID != 1 {
		t.Fatalf("history with a damaged entry: %+v, %v; want every entry, the damaged one shown as unreadable", h, err)
	}
	if _, _, err := s.CompareAndSwap(ctx, rev, blue, store.Entry{Operation: "swap", Result: store.Applied}); err != nil {
		t.Fatalf("a change beside damaged history keys: %v", err)
	}

	// An unreadable state: an answer, not unreachability.
	if _, err := kv.Put(ctx, s.Prefix()+"state", "{"); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Load(ctx)
	if err == nil || errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), s.Prefix()+"state") || strings.Contains(err.Error(), "decided") {
		t.Fatalf("Load of an unreadable state: %v; want an error naming the key", err)
	}
}
