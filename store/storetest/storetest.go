// Package storetest is the conformance suite every store.Store must pass.
package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Run runs the suite; open returns a new, empty store that the suite closes.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	blue := state.State{Active: "blue", Standby: "green"}
	green := state.State{Active: "green", Standby: "blue"}

	t.Run("empty store has no state", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		if _, rev, err := s.Load(ctx); !errors.Is(err, store.ErrNotFound) || rev != 0 {
			t.Fatalf("got rev %d, err %v; want 0, ErrNotFound", rev, err)
		}
	})

	t.Run("compare-and-swap moves the revision", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		r1, err := s.CompareAndSwap(ctx, 0, blue)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := s.CompareAndSwap(ctx, r1, green)
		if err != nil {
			t.Fatal(err)
		}
		if r2 == r1 {
			t.Fatalf("revision did not change: %d", r2)
		}
		got, rev, err := s.Load(ctx)
		if err != nil || got != green || rev != r2 {
			t.Fatalf("Load = %+v, %d, %v; want %+v, %d", got, rev, err, green, r2)
		}
	})

	t.Run("stale revision is a conflict and changes nothing", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		r1, err := s.CompareAndSwap(ctx, 0, blue)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.CompareAndSwap(ctx, r1+100, green)
		var conflict *store.ConflictError
		if !errors.As(err, &conflict) || conflict.Current != r1 {
			t.Fatalf("got %v, want a conflict naming revision %d", err, r1)
		}
		if got, rev, _ := s.Load(ctx); got != blue || rev != r1 {
			t.Fatalf("state after conflict = %+v@%d, want %+v@%d", got, rev, blue, r1)
		}
	})

	t.Run("concurrent writers: exactly one wins per revision", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		r0, err := s.CompareAndSwap(ctx, 0, blue)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 20 {
			wg.Go(func() {
				if _, err := s.CompareAndSwap(ctx, r0, green); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				} else if !errors.Is(err, store.ErrConflict) {
					t.Errorf("unexpected error: %v", err)
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("%d writers won, want exactly 1", wins)
		}
	})
}
