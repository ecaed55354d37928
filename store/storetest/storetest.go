// Package storetest is the conformance suite every store.Store must pass.
package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Run runs the suite; open returns a new, empty store that the suite closes.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	blue := state.State{Active: "blue", Standby: "green"}
	green := state.State{Active: "green", Standby: "blue", Previous: "blue", Drained: []string{"blue/127.0.0.1:1"}}
	swap := store.Entry{Time: time.Unix(1700000000, 0).UTC(), Actor: "local", Operation: "swap", From: "blue", To: "green", Result: store.Applied}

	t.Run("empty store has no state and no history", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		if _, rev, err := s.Load(ctx); !errors.Is(err, store.ErrNotFound) || rev != 0 {
			t.Fatalf("got rev %d, err %v; want 0, ErrNotFound", rev, err)
		}
		if h, err := s.History(ctx, 0); err != nil || len(h) != 0 {
			t.Fatalf("history %v, %v; want empty", h, err)
		}
	})

	t.Run("compare-and-swap moves the revision and records the entry", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		r1, _, err := s.CompareAndSwap(ctx, 0, blue, store.Entry{Operation: "seed", Result: store.Applied})
		if err != nil {
			t.Fatal(err)
		}
		r2, e, err := s.CompareAndSwap(ctx, r1, green, swap)
		if err != nil {
			t.Fatal(err)
		}
		if r2 == r1 || e.Revision != r2 || e.ID == 0 {
			t.Fatalf("revisions %d then %d, entry %+v", r1, r2, e)
		}
		got, rev, err := s.Load(ctx)
		if err != nil || !got.Equal(green) || rev != r2 {
			t.Fatalf("Load = %+v, %d, %v; want %+v, %d", got, rev, err, green, r2)
		}
		h, err := s.History(ctx, 0)
		if err != nil || len(h) != 2 || h[0].ID != e.ID || h[0].To != "green" || !h[0].Time.Equal(swap.Time) {
			t.Fatalf("history %+v, %v; want the swap first of two", h, err)
		}
	})

	t.Run("stale revision is a conflict and changes nothing", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		r1, _, err := s.CompareAndSwap(ctx, 0, blue, swap)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = s.CompareAndSwap(ctx, r1+100, green, swap)
		var conflict *store.ConflictError
		if !errors.As(err, &conflict) || conflict.Current != r1 {
			t.Fatalf("got %v, want a conflict naming revision %d", err, r1)
		}
		if got, rev, _ := s.Load(ctx); !got.Equal(blue) || rev != r1 {
			t.Fatalf("state after conflict = %+v@%d, want %+v@%d", got, rev, blue, r1)
		}
		if h, _ := s.History(ctx, 0); len(h) != 1 {
			t.Fatalf("a conflicting change left %d history entries, want 1", len(h))
		}
	})

	t.Run("refused operations are recorded without a state change", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		r1, _, _ := s.CompareAndSwap(ctx, 0, blue, swap)
		e, err := s.Record(ctx, store.Entry{Operation: "swap", Result: store.Refused, Error: "no healthy instance"})
		if err != nil || e.ID == 0 {
			t.Fatalf("Record = %+v, %v", e, err)
		}
		if _, rev, _ := s.Load(ctx); rev != r1 {
			t.Fatalf("Record moved the revision to %d", rev)
		}
		h, _ := s.History(ctx, 1)
		if len(h) != 1 || h[0].Result != store.Refused {
			t.Fatalf("latest entry %+v, want the refusal", h)
		}
	})

	t.Run("a measurement is attached once", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		_, e, _ := s.CompareAndSwap(ctx, 0, blue, swap)
		m := store.Measurement{Served: 48211, Failed: 0, Drained: 1400 * time.Millisecond, Complete: true}
		if err := s.Measure(ctx, e.ID, m); err != nil {
			t.Fatal(err)
		}
		if err := s.Measure(ctx, e.ID, m); err == nil {
			t.Fatal("a second measurement was accepted")
		}
		if err := s.Measure(ctx, e.ID+99, m); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("measuring a missing entry: %v, want ErrNotFound", err)
		}
		got, err := s.Entry(ctx, e.ID)
		if err != nil || got.Measurement == nil || *got.Measurement != m || got.To != "green" {
			t.Fatalf("entry after Measure: %+v, %v", got, err)
		}
		if _, err := s.Entry(ctx, e.ID+99); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing entry: %v, want ErrNotFound", err)
		}
	})

	t.Run("history limit returns the newest", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for range 5 {
			s.Record(ctx, swap)
		}
		h, err := s.History(ctx, 2)
		if err != nil || len(h) != 2 || h[0].ID != 5 || h[1].ID != 4 {
			t.Fatalf("History(2) = %+v, %v; want entries 5 and 4", h, err)
		}
	})

	t.Run("watch sees every committed change", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		wctx, cancel := context.WithCancel(ctx)
		ch := s.Watch(wctx)
		rev, _, err := s.CompareAndSwap(ctx, 0, green, swap)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-ch:
			if ev.Revision != rev || !ev.State.Equal(green) {
				t.Fatalf("event %+v, want revision %d", ev, rev)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
		}
		cancel()
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatal("got an event after cancel, want the channel closed")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("watch channel not closed after cancel")
		}
	})

	t.Run("concurrent writers: exactly one wins per revision", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		r0, _, err := s.CompareAndSwap(ctx, 0, blue, swap)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 20 {
			wg.Go(func() {
				if _, _, err := s.CompareAndSwap(ctx, r0, green, swap); err == nil {
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
		if h, _ := s.History(ctx, 0); len(h) != 2 {
			t.Fatalf("%d history entries, want 2 (seed and the one winner)", len(h))
		}
	})
}
