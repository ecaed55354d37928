package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// History returns up to limit entries of the history whose ID is below
// before (0: from the newest), newest first; limit <= 0 means all.
func (c *Controller) History(ctx context.Context, before uint64, limit int) ([]wire.HistoryEntry, error) {
	entries, err := c.cfg.Store.HistoryBefore(ctx, before, limit)
	if err != nil {
		return nil, err
	}
	out := make([]wire.HistoryEntry, len(entries))
	for i, e := range entries {
		out[i] = wireEntry(e)
	}
	return out, nil
}

// Entry returns the history entry with the given ID.
func (c *Controller) Entry(ctx context.Context, id uint64) (wire.HistoryEntry, error) {
	e, err := c.cfg.Store.Entry(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return wire.HistoryEntry{}, notFound(fmt.Errorf("no history entry %d", id))
	}
	if err != nil {
		return wire.HistoryEntry{}, err
	}
	w := wireEntry(e)
	if w.Measurement == nil {
		c.mu.Lock()
		if n, ok := c.draining[id]; ok {
			w.Draining = &n
		}
		c.mu.Unlock()
	}
	return w, nil
}

func wireEntry(e store.Entry) wire.HistoryEntry {
	w := wire.HistoryEntry{
		ID: e.ID, Time: e.Time, Actor: e.Actor, Operation: e.Operation, From: e.From, To: e.To,
		Instance: e.Instance, Forced: e.Forced, Reason: e.Reason, Changes: e.Changes, Result: e.Result, Error: e.Error,
		Revision: uint64(e.Revision),
	}
	if m := e.Measurement; m != nil {
		w.Measurement = wireMeasurement(*m)
	}
	for _, s := range e.Steps {
		w.Steps = append(w.Steps, wire.Step{Name: s.Name, Start: s.Start, Seconds: s.Duration.Seconds(), Result: s.Result, Detail: s.Detail})
	}
	return w
}

func wireMeasurement(m store.Measurement) *wire.Measurement {
	w := &wire.Measurement{Served: m.Served, Failed: m.Failed, InstanceErrors: m.InstanceErrors, ClientErrors: m.ClientErrors,
		DrainedSeconds: m.Drained.Seconds(), Complete: m.Complete,
		ConvergedSeconds: m.Converged.Seconds()}
	if !m.Start.IsZero() {
		w.Start, w.End = m.Start, m.End
		w.WindowSeconds = m.End.Sub(m.Start).Seconds()
		w.Listeners = make(map[string]wire.Window, len(m.Listeners))
		for name, lw := range m.Listeners {
			w.Listeners[name] = wire.Window{Requests: lw.Requests, Errors: lw.Errors, Failed: lw.Failed,
				InstanceErrors: lw.InstanceErrors, ClientErrors: lw.ClientErrors}
		}
	}
	if len(m.Nodes) > 0 {
		w.Nodes = make(map[string]*wire.Measurement, len(m.Nodes))
		for _, n := range m.Nodes {
			w.Nodes[n.Node] = wireMeasurement(n)
		}
	}
	return w
}

// Readiness reports whether vipswap routes traffic: a table has been
// published and the store answers.
func (c *Controller) Readiness(ctx context.Context) error {
	c.mu.Lock()
	published := c.published
	c.mu.Unlock()
	if !published {
		return errors.New("no routing table published yet")
	}
	if c.clustered() {
		return nil // it serves the last state it had; status says the store is out of reach
	}
	if _, _, err := c.cfg.Store.Load(ctx); err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	return nil
}

// clustered reports whether the store is shared with other nodes: then a
// node that cannot reach it still serves (and stays ready); only its
// changes are refused.
func (c *Controller) clustered() bool { return c.cfg.LocalCopy != nil }

// Measure says which traffic a switch's measurement covers: from Before
// the change until After it, or until the old slot has drained if that
// takes longer, but no longer than Limit.
type Measure struct {
	// Before is how much traffic before the change is counted. Zero means
	// 5s.
	Before time.Duration
	// After is how much traffic after the change is counted at least.
	// Zero means 5s.
	After time.Duration
	// Limit bounds how long the measurement waits for the old slot to
	// drain. Zero means 5 minutes.
	Limit time.Duration
}

func (m *Measure) setDefaults() {
	if m.Before <= 0 {
		m.Before = 5 * time.Second
	}
	if m.After <= 0 {
		m.After = 5 * time.Second
	}
	if m.Limit <= 0 {
		m.Limit = 5 * time.Minute
	}
}

// startMeasure measures the traffic around a change that moved prod away
// from slot, made at changed, and records it on history entry id: every
// listener's requests, errors and failures from Measure.Before before the
// change until Measure.After after it or until slot has no prod request in
// flight, whichever is later. In a cluster every node measures its own
// traffic and records it under its name; the entry sums them. id 0 means
// a change another node made: the entry is the one that produced rev.
// The caller holds c.mu.
func (c *Controller) startMeasure(id uint64, rev store.Revision, slot string, changed time.Time) {
	if c.ctx.Err() != nil {
		return // closing
	}
	mc := c.cfg.Measure
	c.wg.Go(func() {
		ctx, cancel := context.WithTimeout(c.ctx, mc.Limit)
		defer cancel()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		complete := true
		var drained time.Duration // zero until the old slot has drained
		defer func() {
			c.mu.Lock()
			delete(c.draining, id)
			c.mu.Unlock()
		}()
		// The first in-flight reading comes once the data planes have the
		// change's table (and a remote one has read its figures again):
		// before that the old slot still takes new requests, and a remote
		// plane's figures may be an interval old.
		c.waitFlushed(ctx, uint64(rev))
	wait:
		for {
			if drained == 0 {
				c.mu.Lock()
				n := c.slotInFlightLocked(slot)
				if id != 0 {
					c.draining[id] = n
				}
				c.mu.Unlock()
				if n == 0 {
					drained = max(time.Since(changed), time.Nanosecond)
					if slot != "" {
						c.events.emit(wire.Event{Kind: wire.EventDrained, Slot: slot, Revision: uint64(rev), HistoryID: id})
					}
				}
			}
			if drained != 0 && time.Since(changed) >= mc.After {
				break
			}
			select {
			case <-ctx.Done():
				complete = drained != 0
				break wait
			case <-tick.C:
			}
		}
		if c.ctx.Err() != nil {
			return // shutting down: the window is cut short, record nothing
		}
		if !complete {
			drained = time.Since(changed)
		}
		before := c.samples.At(changed.Add(-mc.Before))
		now := c.samples.Live()
		m := store.Measurement{
			Drained: drained, Complete: complete, Start: before.At.UTC(), End: now.At.UTC(),
			Listeners: make(map[string]store.Window, len(route.Listeners)),
		}
		for _, l := range route.Listeners {
			// The sums, then the difference: a slot removed in the window
			// keeps its counts in the data plane's totals.
			n := now.Counts.Listener(l).Sub(before.Counts.Listener(l))
			m.Listeners[l.String()] = store.Window{Requests: n.Requests(), Errors: n.Errors(), Failed: n.Failed,
				InstanceErrors: n.InstanceErrors, ClientErrors: n.ClientErrors}
		}
		prod := m.Listeners[route.Prod.String()]
		m.Served, m.Failed = prod.Requests, prod.Failed
		m.InstanceErrors, m.ClientErrors = prod.InstanceErrors, prod.ClientErrors
		if c.clustered() {
			m.Node = c.cfg.Node
		}
		c.mu.Lock()
		if took, ok := c.converged[uint64(rev)]; ok {
			m.Converged = took
			delete(c.converged, uint64(rev))
		}
		c.mu.Unlock()
		if id == 0 {
			if id = c.entryOf(rev); id == 0 {
				c.log.Info("a switch made elsewhere was measured here, but its history entry is not among the newest", "revision", rev)
				return
			}
		}
		if err := c.cfg.Store.Measure(context.Background(), id, m); errors.Is(err, store.ErrNotFound) {
			c.log.Info("a switch's measurement has no history entry left (retention pruned it)", "history_id", id)
			return
		} else if err != nil {
			c.storeErrors.Add(1)
			c.log.Error("could not record a switch's measurement", "history_id", id, "err", err)
			return
		}
		outcome := "complete"
		if !complete {
			outcome = "incomplete"
		}
		c.events.emit(wire.Event{Kind: wire.EventMeasured, Slot: slot, Revision: uint64(rev), HistoryID: id, Outcome: outcome})
		c.log.Info("switch measured", "slot", slot, "history_id", id, "requests", m.Served, "failed", m.Failed,
			"errors", prod.Errors, "window", m.End.Sub(m.Start).Round(time.Millisecond),
			"drained_in", m.Drained.Round(time.Millisecond), "complete", complete)
	})
}

// entryOf returns the ID of the history entry that produced state
// revision rev, looking among the newest entries; 0 if none.
func (c *Controller) entryOf(rev store.Revision) uint64 {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	entries, err := c.cfg.Store.HistoryBefore(ctx, 0, 200)
	if err != nil {
		return 0
	}
	for _, e := range entries {
		if e.Revision == rev && e.Result == store.Applied {
			return e.ID
		}
	}
	return 0
}

// slotInFlightLocked counts prod requests in flight on slot (none for
// ""), with c.mu held.
func (c *Controller) slotInFlightLocked(slot string) int64 {
	var n int64
	for _, i := range c.instances[slot] {
		n += i.InFlight(route.Prod)
	}
	if slot != "" {
		for _, r := range c.remotes() {
			n += r.InFlight(slot, "")
		}
	}
	return n
}
