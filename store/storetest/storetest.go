// Package storetest is the conformance suite every store.Store must pass.
package storetest

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Run runs the suite; open returns a new, empty store that keeps history
// within r (zero: unbounded). The suite closes it.
func Run(t *testing.T, openWith func(t *testing.T, r store.Retention) store.Store) {
	open := func(t *testing.T) store.Store { return openWith(t, store.Retention{}) }
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
		start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
		m := store.Measurement{Served: 48211, Failed: 0, Drained: 1400 * time.Millisecond, Complete: true,
			Start: start, End: start.Add(10 * time.Second),
			Listeners: map[string]store.Window{"prod": {Requests: 48211, Errors: 3}, "stage": {Requests: 12}}}
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
		if err != nil || got.Measurement == nil || !reflect.DeepEqual(*got.Measurement, m) || got.To != "green" {
			t.Fatalf("entry after Measure: %+v, %v", got, err)
		}
		if _, err := s.Entry(ctx, e.ID+99); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing entry: %v, want ErrNotFound", err)
		}
	})

	t.Run("each node's measurement is kept and summed", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		_, e, _ := s.CompareAndSwap(ctx, 0, blue, swap)
		start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
		a := store.Measurement{Node: "a", Served: 100, Failed: 1, Drained: time.Second, Complete: true, Start: start, End: start.Add(10 * time.Second),
			Listeners: map[string]store.Window{"prod": {Requests: 100, Errors: 2, Failed: 1}}}
		b := store.Measurement{Node: "b", Served: 50, Drained: 3 * time.Second, Complete: false, Start: start.Add(-time.Second), End: start.Add(8 * time.Second),
			Listeners: map[string]store.Window{"prod": {Requests: 50}, "stage": {Requests: 7}}}
		for _, m := range []store.Measurement{a, b} {
			if err := s.Measure(ctx, e.ID, m); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Measure(ctx, e.ID, a); err == nil {
			t.Fatal("a node's second measurement was accepted")
		}
		if err := s.Measure(ctx, e.ID, store.Measurement{Served: 1}); err == nil {
			t.Fatal("a measurement without a node was accepted on a cluster's entry")
		}
		got, err := s.Entry(ctx, e.ID)
		if err != nil || got.Measurement == nil {
			t.Fatal(got, err)
		}
		m := *got.Measurement
		want := store.Measurement{Served: 150, Failed: 1, Drained: 3 * time.Second, Complete: false, Start: start.Add(-time.Second), End: start.Add(10 * time.Second),
			Listeners: map[string]store.Window{"prod": {Requests: 150, Errors: 2, Failed: 1}, "stage": {Requests: 7}}}
		if len(m.Nodes) != 2 || !reflect.DeepEqual(m.Nodes[0], a) || !reflect.DeepEqual(m.Nodes[1], b) {
			t.Fatalf("nodes %+v, want a then b as measured", m.Nodes)
		}
		m.Nodes = nil
		if !reflect.DeepEqual(m, want) {
			t.Fatalf("sum %+v, want %+v", m, want)
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

	t.Run("history pages end before an entry", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for range 7 {
			s.Record(ctx, swap)
		}
		for _, c := range []struct {
			before uint64
			limit  int
			want   string
		}{
			{0, 3, "7 6 5"}, {5, 3, "4 3 2"}, {2, 3, "1"}, {1, 3, ""}, {100, 2, "7 6"}, {4, 0, "3 2 1"}, {0, -1, "7 6 5 4 3 2 1"},
		} {
			h, err := s.HistoryBefore(ctx, c.before, c.limit)
			if got := ids(h); err != nil || got != c.want {
				t.Errorf("HistoryBefore(%d, %d) = %q, %v; want %q", c.before, c.limit, got, err, c.want)
			}
		}
	})

	t.Run("retention by count prunes the oldest as it appends", func(t *testing.T) {
		s := openWith(t, store.Retention{MaxEntries: 3})
		defer s.Close()
		rev, _, err := s.CompareAndSwap(ctx, 0, blue, swap)
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if _, err := s.Record(ctx, swap); err != nil {
				t.Fatal(err)
			}
		}
		if h, err := s.History(ctx, 0); err != nil || ids(h) != "5 4 3" {
			t.Fatalf("history %q, %v; want 5 4 3", ids(h), err)
		}
		if _, err := s.Entry(ctx, 1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the pruned entry 1: %v, want ErrNotFound", err)
		}
		if err := s.Measure(ctx, 2, store.Measurement{Complete: true}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("measuring a pruned entry: %v, want ErrNotFound", err)
		}
		// A state change prunes too, and IDs are never reused.
		if _, e, err := s.CompareAndSwap(ctx, rev, green, swap); err != nil || e.ID != 6 {
			t.Fatalf("CompareAndSwap after pruning: entry %d, %v; want 6", e.ID, err)
		}
		if h, _ := s.History(ctx, 0); ids(h) != "6 5 4" {
			t.Fatalf("history %q after a state change, want 6 5 4", ids(h))
		}
		if got, _, err := s.Load(ctx); err != nil || !got.Equal(green) {
			t.Fatalf("state %+v, %v after pruning; want green", got, err)
		}
	})

	t.Run("retention by age prunes what is older", func(t *testing.T) {
		s := openWith(t, store.Retention{MaxAge: 90 * time.Minute})
		defer s.Close()
		now := time.Now().UTC()
		for _, age := range []time.Duration{5 * time.Hour, 3 * time.Hour, 2 * time.Hour, time.Hour, 0} {
			e := swap
			e.Time = now.Add(-age)
			if _, err := s.Record(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if h, err := s.History(ctx, 0); err != nil || ids(h) != "5 4" {
			t.Fatalf("history %q, %v; want the entries of the last 90 minutes, 5 and 4", ids(h), err)
		}
		// An entry appended with an old time is kept: retention never
		// drops the record of what just happened.
		old := swap
		old.Time = now.Add(-48 * time.Hour)
		if _, err := s.Record(ctx, old); err != nil {
			t.Fatal(err)
		}
		if h, _ := s.History(ctx, 0); ids(h) != "6 5 4" {
			t.Fatalf("history %q, want 6 5 4", ids(h))
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
		case <-time.After(time.Minute):
			t.Fatal("no event for the committed change")
		}
		cancel()
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatal("got an event after cancel, want the channel closed")
			}
		case <-time.After(time.Minute):
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

// ids lists the entries' IDs, space-separated.
func ids(h []store.Entry) string {
	s := make([]string, len(h))
	for i, e := range h {
		s[i] = strconv.FormatUint(e.ID, 10)
	}
	return strings.Join(s, " ")
}
