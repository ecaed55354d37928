package acmecert

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newEtcdStorage(t *testing.T) *EtcdStorage {
	t.Helper()
	e := etcdtest.Start(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &EtcdStorage{Client: cli, Prefix: "/vipswap/acme/"}
}

// TestEtcdStorage: certmagic's storage semantics over etcd: values, the
// "directories" their keys imply, missing keys as fs.ErrNotExist.
func TestEtcdStorage(t *testing.T) {
	s := newEtcdStorage(t)
	ctx := t.Context()
	for k, v := range map[string]string{
		"certificates/ca/www.example.com/www.example.com.crt": "CRT",
		"certificates/ca/www.example.com/www.example.com.key": "KEY",
		"certificates/ca/api.example.com/api.example.com.crt": "CRT2",
		"acme/ca/users/ops@example.com/ops.json":              "{}",
	} {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := s.Load(ctx, "certificates/ca/www.example.com/www.example.com.key"); err != nil || string(v) != "KEY" {
		t.Errorf("Load: %q %v", v, err)
	}
	if _, err := s.Load(ctx, "certificates/ca/nothing.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Load(ctx, "certificates/ca"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a directory: %v, want fs.ErrNotExist", err)
	}
	if got, err := s.List(ctx, "certificates/ca", false); err != nil || !slices.Equal(got, []string{"certificates/ca/api.example.com", "certificates/ca/www.example.com"}) {
		t.Errorf("List: %v %v", got, err)
	}
	if got, err := s.List(ctx, "certificates", true); err != nil || len(got) != 3 {
		t.Errorf("List recursive: %v %v", got, err)
	}
	if _, err := s.List(ctx, "nothing", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List of nothing: %v", err)
	}
	if ki, err := s.Stat(ctx, "certificates/ca/www.example.com"); err != nil || ki.IsTerminal {
		t.Errorf("Stat of a directory: %+v %v", ki, err)
	}
	if ki, err := s.Stat(ctx, "certificates/ca/www.example.com/www.example.com.crt"); err != nil || !ki.IsTerminal || ki.Size != 3 {
		t.Errorf("Stat of a value: %+v %v", ki, err)
	}
	// A key that is only a prefix of another's name is neither.
	if s.Exists(ctx, "certificates/ca/www") {
		t.Error("Exists of a partial name")
	}
	if err := s.Delete(ctx, "certificates/ca/www.example.com"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/ca/www.example.com/www.example.com.crt") || !s.Exists(ctx, "certificates/ca/api.example.com") {
		t.Error("Delete of a directory removed too little or too much")
	}
	if err := s.Delete(ctx, "never/there"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
	// Hostile values and names: large, binary, odd characters stay as
	// they are and under the prefix.
	big := strings.Repeat("\x00\xff", 256<<10)
	if err := s.Store(ctx, "../../state", []byte(big)); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Load(ctx, "../../state"); err != nil || string(v) != big {
		t.Errorf("a 512 KiB binary value came back changed: %v", err)
	}
	resp, err := s.Client.Get(ctx, "/vipswap/state")
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("a key outside the prefix was written: %v", err)
	}
}

// TestEtcdLock: one holder at a time, across storages (nodes) and within
// one; a waiter gives up when its context ends; a holder whose process
// dies (its session gone) frees the lock.
func TestEtcdLock(t *testing.T) {
	a := newEtcdStorage(t)
	b := &EtcdStorage{Client: a.Client, Prefix: a.Prefix}
	ctx := t.Context()
	var holders, most atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		s := []*EtcdStorage{a, b}[i%2]
		wg.Go(func() {
			if err := s.Lock(ctx, "issue_cert_www.example.com"); err != nil {
				t.Error(err)
				return
			}
			n := holders.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			// Hold it across a round trip, so that an overlap would show.
			a.Exists(ctx, "x")
			holders.Add(-1)
			if err := s.Unlock(ctx, "issue_cert_www.example.com"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("%d held the lock at once, want 1", most.Load())
	}
	if err := a.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := b.Lock(short, "l"); err == nil {
		t.Fatal("a second Lock succeeded while the first held it")
	}
	// The holder dies: its lease is revoked (as it expires when a process
	// dies), and the lock is free.
	a.mu.Lock()
	a.locks["l"].session.Close()
	a.mu.Unlock()
	if err := b.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "never-locked"); err == nil {
		t.Error("Unlock of a lock never taken succeeded")
	}
}

// TestEtcdStorageUnreachable: with etcd gone, reads and writes fail (after
// Timeout) rather than wait for it: a challenge's request or handshake is
// not held.
func TestEtcdStorageUnreachable(t *testing.T) {
	e := etcdtest.Start(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := &EtcdStorage{Client: cli, Prefix: "/vipswap/acme/", Timeout: 200 * time.Millisecond}
	if err := s.Store(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	e.Kill(t)
	if _, err := s.Load(t.Context(), "k"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load with etcd gone: %v, want a failure that is not fs.ErrNotExist", err)
	}
	if s.Exists(t.Context(), "k") {
		t.Error("Exists with etcd gone")
	}
	if err := s.Store(t.Context(), "k", []byte("w")); err == nil {
		t.Error("Store with etcd gone succeeded")
	}
}
