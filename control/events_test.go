package control_test

import (
	"context"
	"testing"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// await waits for the first event after seq that match accepts.
func await(t *testing.T, f *fixture, seq uint64, what string, match func(wire.Event) bool) wire.Event {
	t.Helper()
	deadline := time.After(time.Minute) // only ends a test whose event never comes
	for {
		evs, next := f.ctrl.Events(seq)
		if evs.Missed {
			t.Fatalf("waiting for %s: events after %d are no longer kept", what, seq)
		}
		for _, e := range evs.Events {
			if match(e) {
				return e
			}
		}
		seq = evs.Next
		select {
		case <-next:
		case <-deadline:
			t.Fatalf("%s did not happen", what)
		}
	}
}

func TestSwapTellsWaitersWhatHappened(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	health := await(t, f, 0, "green's health", func(e wire.Event) bool {
		return e.Kind == wire.EventHealth && e.Slot == "green"
	})
	if health.Healthy == nil || !*health.Healthy || health.Seq == 0 {
		t.Fatalf("green's health event: %+v", health)
	}
	seq := f.ctrl.LastEvent()
	res, err := f.ctrl.Swap(context.Background(), wire.ChangeRequest{Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	changed := await(t, f, seq, "the swap", func(e wire.Event) bool { return e.Kind == wire.EventChange })
	if changed.Revision != res.Revision || changed.HistoryID != res.HistoryID || changed.Operation != "swap" || changed.Active != "green" {
		t.Fatalf("change event %+v, want revision %d history %d swap to green", changed, res.Revision, res.HistoryID)
	}
	drained := await(t, f, changed.Seq, "blue drained", func(e wire.Event) bool { return e.Kind == wire.EventDrained })
	if drained.Slot != "blue" || drained.HistoryID != res.HistoryID {
		t.Fatalf("drained event %+v, want blue of history %d", drained, res.HistoryID)
	}
}

func TestAbortedRolloutSaysWhy(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	ctx := context.Background()
	if _, err := f.ctrl.StartRolloutRequest(ctx, wire.RolloutRequest{To: "green", Steps: []float64{10, 100}, Interval: "1h"}); err != nil {
		t.Fatal(err)
	}
	seq := f.ctrl.LastEvent()
	res, err := f.ctrl.Abort(ctx, wire.ChangeRequest{Reason: "the canary logs errors"})
	if err != nil {
		t.Fatal(err)
	}
	end := await(t, f, seq, "the rollout's end", func(e wire.Event) bool { return e.Kind == wire.EventRollout })
	if end.Outcome != "aborted" || end.Slot != "green" || end.Active != "blue" || end.HistoryID != res.HistoryID ||
		len(end.Reasons) != 1 || end.Reasons[0] != "the canary logs errors" {
		t.Fatalf("rollout event %+v: want green aborted, prod on blue, the operator's reason", end)
	}
}

func TestEventsSayWhenSomeWereMissed(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	last := f.ctrl.LastEvent()
	if evs, _ := f.ctrl.Events(last + 5); !evs.Missed || len(evs.Events) != 0 || evs.Next != last {
		t.Fatalf("events after a number never given: %+v, want missed and next %d", evs, last)
	}
	ctx := context.Background()
	for range 140 { // two events each at least: more than a controller keeps
		if _, err := f.ctrl.Swap(ctx, wire.ChangeRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	evs, _ := f.ctrl.Events(last)
	if !evs.Missed || len(evs.Events) == 0 || evs.Events[len(evs.Events)-1].Seq != evs.Next {
		t.Fatalf("events after %d once 140 swaps happened: missed %v, %d events, next %d", last, evs.Missed, len(evs.Events), evs.Next)
	}
	for i := 1; i < len(evs.Events); i++ {
		if evs.Events[i].Seq != evs.Events[i-1].Seq+1 {
			t.Fatalf("event %d follows %d", evs.Events[i].Seq, evs.Events[i-1].Seq)
		}
	}
}

// TestEventNumbersAfterARestart: a waiter that asks a restarted node for
// the events after a number the node gave before it restarted is told it
// missed some, even once the new node has given as many events.
func TestEventNumbersAfterARestart(t *testing.T) {
	ctx := context.Background()
	before := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	before.waitHealthy(t, "green", 1)
	if _, err := before.ctrl.Swap(ctx, wire.ChangeRequest{}); err != nil {
		t.Fatal(err)
	}
	seq := before.ctrl.LastEvent() // what a waiter took before the restart

	after := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	after.waitHealthy(t, "green", 1)
	for n := 0; after.ctrl.LastEvent() <= seq; n++ { // as many events as before, and more
		if n > int(seq)+10 {
			t.Fatalf("%d swaps and the new node's newest event is %d", n, after.ctrl.LastEvent())
		}
		if _, err := after.ctrl.Swap(ctx, wire.ChangeRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	evs, _ := after.ctrl.Events(seq)
	if !evs.Missed {
		t.Fatalf("events after %d (given before the restart) from the restarted node: %d events from %d, not missed; want missed", seq, len(evs.Events), evs.Events[0].Seq)
	}
}

// TestReplacedRolloutEnds: a node that adopts a state in which another
// rollout runs in place of the one it had (its watch saw only the newest
// of several states) says the one it had ended.
func TestReplacedRolloutEnds(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	ctx := context.Background()
	if _, err := f.ctrl.StartRolloutRequest(ctx, wire.RolloutRequest{To: "green", Steps: []float64{10, 100}, Interval: "1h"}); err != nil {
		t.Fatal(err)
	}
	seq := f.ctrl.LastEvent()
	// Another node aborted it and began another: one write, as this node
	// may see it.
	st, rev, err := f.store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, err := st.Abort().StartRollout(*st.Rollout, state.Readiness{Healthy: 1, Routable: 1}, false, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	newRev, _, err := f.store.CompareAndSwap(ctx, rev, next, store.Entry{Time: time.Now().UTC(), Actor: "node-b", Operation: "rollout", To: "green", Result: store.Applied})
	if err != nil {
		t.Fatal(err)
	}
	// The change and the rollout's end are emitted one after the other:
	// wait for the end itself, which must come with the adopted revision.
	end := await(t, f, seq, "the replaced rollout's end", func(e wire.Event) bool { return e.Kind == wire.EventRollout })
	if end.Slot != "green" || end.Outcome != "aborted" || end.Revision != uint64(newRev) {
		t.Fatalf("rollout event %+v; want green's first rollout aborted at revision %d", end, newRev)
	}
}
