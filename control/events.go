package control

import (
	"slices"
	"sync"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// eventsKept is how many of the newest events a controller keeps for
// waiters that ask from an earlier one.
const eventsKept = 256

// events numbers what happened and wakes whoever waits for it: releases,
// swap --wait and the dashboard wait on it instead of polling. It has its
// own lock, taken after any other, and never calls out.
type events struct {
	mu      sync.Mutex
	kept    []wire.Event // the newest, oldest first; kept[i].Seq == last-len(kept)+1+i
	start   uint64       // the number before this hub's first event
	last    uint64       // the newest event's number (start before the first)
	changed chan struct{}
}

// newEvents returns a hub whose numbers start from the clock, in
// microseconds: a number a node gave before it restarted is below every
// one it gives after, so a waiter that asks with it is told it missed
// some (one event a microsecond is far beyond what a node makes).
func newEvents() *events {
	start := uint64(time.Now().UnixMicro())
	return &events{changed: make(chan struct{}), start: start, last: start}
}

// emit numbers e, keeps it and wakes every waiter.
func (h *events) emit(e wire.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last++
	e.Seq = h.last
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if len(h.kept) == eventsKept {
		h.kept = slices.Delete(h.kept, 0, eventsKept/4)
	}
	h.kept = append(h.kept, e)
	close(h.changed)
	h.changed = make(chan struct{})
}

// since returns the events after seq, and a channel closed at the next one.
func (h *events) since(seq uint64) (wire.Events, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := wire.Events{Events: []wire.Event{}, Next: h.last}
	if seq == 0 {
		seq = h.start // all this node's events
	}
	if seq >= h.last {
		if seq > h.last {
			out.Missed = true // a number this controller never gave: it restarted
		}
		return out, h.changed
	}
	first := h.last - uint64(len(h.kept)) + 1 // the oldest kept
	if seq+1 < first {
		out.Missed = true
		seq = first - 1
	}
	out.Events = slices.Clone(h.kept[seq+1-first:])
	return out, h.changed
}

// Events returns the events after seq (0: all that are kept), oldest
// first, and a channel closed when the next one happens. A waiter takes
// LastEvent first, then reads what it waits on, then waits for the
// events after the number it took.
func (c *Controller) Events(seq uint64) (wire.Events, <-chan struct{}) {
	return c.events.since(seq)
}

// LastEvent returns the newest event's number: a waiter reads what it
// waits on after taking it, then waits for the events after it.
func (c *Controller) LastEvent() uint64 {
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	return c.events.last
}

// stateEventsLocked emits what putting next in force in place of prev
// says: a change, and the end of a rollout (also when another took its
// place: a node that follows may see only the newest of several states). e is the history entry of a
// change this node made (nil for one it adopted). Called with c.mu held.
func (c *Controller) stateEventsLocked(prev, next state.State, rev store.Revision, e *store.Entry) {
	ev := wire.Event{Kind: wire.EventChange, Revision: uint64(rev), Active: next.Active}
	if e != nil {
		ev.Operation, ev.HistoryID = e.Operation, e.ID
	}
	c.events.emit(ev)
	if prev.Rollout == nil || next.Rollout != nil && next.Rollout.To == prev.Rollout.To && next.Rollout.Started.Equal(prev.Rollout.Started) {
		return // none ran, or the same one runs on
	}
	end := wire.Event{Kind: wire.EventRollout, Revision: uint64(rev), Active: next.Active, Slot: prev.Rollout.To, Outcome: "aborted"}
	if next.Active == prev.Rollout.To && next.WeightOf(next.Active) == 1000 {
		end.Outcome = "promoted"
	}
	if e != nil {
		end.HistoryID = e.ID
		if e.Reason != "" {
			end.Reasons = []string{e.Reason}
		} else {
			end.Reasons = slices.Clone(e.Changes)
		}
	}
	c.events.emit(end)
}
