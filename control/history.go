package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/store"
)

// History returns up to limit entries of the history, newest first.
func (c *Controller) History(ctx context.Context, limit int) ([]api.HistoryEntry, error) {
	entries, err := c.cfg.Store.History(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]api.HistoryEntry, len(entries))
	for i, e := range entries {
		out[i] = wireEntry(e)
	}
	return out, nil
}

// Entry returns the history entry with the given ID.
func (c *Controller) Entry(ctx context.Context, id uint64) (api.HistoryEntry, error) {
	e, err := c.cfg.Store.Entry(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return api.HistoryEntry{}, &api.Error{Status: http.StatusNotFound, Err: fmt.Errorf("no history entry %d", id)}
	}
	if err != nil {
		return api.HistoryEntry{}, err
	}
	return wireEntry(e), nil
}

func wireEntry(e store.Entry) api.HistoryEntry {
	w := api.HistoryEntry{
		ID: e.ID, Time: e.Time, Actor: e.Actor, Operation: e.Operation, From: e.From, To: e.To,
		Instance: e.Instance, Forced: e.Forced, Reason: e.Reason, Result: e.Result, Error: e.Error,
		Revision: uint64(e.Revision),
	}
	if m := e.Measurement; m != nil {
		w.Measurement = &api.Measurement{Served: m.Served, Failed: m.Failed, DrainedSeconds: m.Drained.Seconds(), Complete: m.Complete}
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
	if _, _, err := c.cfg.Store.Load(ctx); err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	return nil
}

// startMeasure measures the prod listener from now until slot, which just
// stopped being active, has no prod request in flight, and records the
// result on history entry id. The caller holds c.mu.
func (c *Controller) startMeasure(id uint64, slot string) {
	if c.ctx.Err() != nil {
		return // closing
	}
	start := time.Now()
	served0, failed0 := c.servedTotal(), c.cfg.Failures(route.Prod)
	c.wg.Go(func() {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.MeasureLimit)
		defer cancel()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		complete := true
	wait:
		for c.slotInFlight(slot) > 0 {
			select {
			case <-ctx.Done():
				complete = false
				break wait
			case <-tick.C:
			}
		}
		if c.ctx.Err() != nil {
			return // shutting down: the window is cut short, record nothing
		}
		m := store.Measurement{
			Served:   c.servedTotal() - served0,
			Failed:   c.cfg.Failures(route.Prod) - failed0,
			Drained:  time.Since(start),
			Complete: complete,
		}
		if err := c.cfg.Store.Measure(context.Background(), id, m); err != nil {
			c.storeErrors.Add(1)
			c.log.Error("could not record a swap's measurement", "history_id", id, "err", err)
			return
		}
		c.log.Info("old slot drained", "slot", slot, "history_id", id, "served", m.Served, "failed", m.Failed,
			"drained_in", m.Drained.Round(time.Millisecond), "complete", complete)
	})
}

// servedTotal sums the prod requests every instance has answered. The
// instances are fixed after New, so no lock is needed.
func (c *Controller) servedTotal() uint64 {
	var n uint64
	for _, insts := range c.instances {
		for _, i := range insts {
			n += i.Served(route.Prod)
		}
	}
	return n
}

// slotInFlight counts prod requests in flight on slot.
func (c *Controller) slotInFlight(slot string) int64 {
	var n int64
	for _, i := range c.instances[slot] {
		n += i.InFlight(route.Prod)
	}
	return n
}
