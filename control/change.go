package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// operation is one state change the controller runs through change.
type operation struct {
	name     string
	req      api.ChangeRequest
	instance string // "slot/addr" for drain and ready
	// next computes the new state from st, with c.mu held. It also fills in
	// the parts of res it knows (target health, in-flight, whether a force
	// overrode a check).
	next func(st state.State, res *api.Change) (state.State, error)
	// to is the slot a shift or rollout moves traffic to (otherwise the
	// result's To is the new active slot).
	to string
	// changes are recorded in the history entry besides prod's split.
	changes []string
}

// describeSplit says prod's split: "blue 80%, green 20%".
func describeSplit(st state.State) string {
	var parts []string
	for _, sh := range st.Prod() {
		parts = append(parts, sh.Slot+" "+state.Percent(sh.PerMille))
	}
	return strings.Join(parts, ", ")
}

// conflictRetries bounds how often a change without if_revision is retried
// when another writer changed the state concurrently (cluster mode).
const conflictRetries = 3

// change runs op: check if_revision, compute the next state, and unless it
// is a dry run or refused, commit it with its history entry in one
// compare-and-swap, then publish. On any failure nothing changes.
func (c *Controller) change(ctx context.Context, op operation) (api.Change, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, err := c.changeLocked(ctx, op)
	result := ""
	var apiErr *api.Error
	switch {
	case err == nil && res.Applied:
		result = "applied"
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusConflict:
		result = "refused"
	case err != nil:
		result = "failed"
	}
	if result != "" {
		c.changes[ChangeKey{op.name, result}]++
	}
	return res, err
}

func (c *Controller) changeLocked(ctx context.Context, op operation) (api.Change, error) {
	actor := op.req.Actor
	if actor == "" {
		actor = "local"
	}
	for attempt := 0; ; attempt++ {
		res := api.Change{Operation: op.name, DryRun: op.req.DryRun, Instance: op.instance, Revision: uint64(c.rev)}
		if op.instance == "" {
			res.From = c.st.Active // swap, rollback: from and to are slots
		}
		entry := store.Entry{
			Time: time.Now().UTC(), Actor: actor, Operation: op.name, From: res.From,
			Instance: op.instance, Reason: op.req.Reason,
		}
		if op.req.IfRevision != nil && *op.req.IfRevision != uint64(c.rev) {
			err := fmt.Errorf("%s refused: the state is at revision %d, not %d", op.name, c.rev, *op.req.IfRevision)
			if op.req.DryRun {
				// A dry run changes nothing, the history included.
				return res, &api.Error{Status: http.StatusConflict, Err: err, Revision: uint64(c.rev)}
			}
			return res, c.refuseLocked(ctx, op, entry, err)
		}
		next, err := op.next(c.st, &res)
		var refusal *state.RefusedError
		switch {
		case errors.As(err, &refusal) && op.req.DryRun:
			res.Refused = refusal.Reason
			return res, nil
		case errors.As(err, &refusal):
			return res, c.refuseLocked(ctx, op, entry, err)
		case err != nil:
			return res, err
		}
		if op.instance == "" {
			res.To = next.Active
			if op.to != "" {
				res.To = op.to
			}
			res.Weights = weights(next, route.Prod)
		}
		if next.Equal(c.st) {
			res.InEffect = true
			return res, nil
		}
		if op.req.DryRun {
			return res, nil
		}
		entry.To, entry.Forced, entry.Result = res.To, res.Forced, store.Applied
		moved := !slices.Equal(c.st.Prod(), next.Prod())
		if moved {
			entry.Changes = append(entry.Changes, "prod: "+describeSplit(next))
		}
		entry.Changes = append(entry.Changes, op.changes...)
		rev, recorded, err := c.cfg.Store.CompareAndSwap(ctx, c.rev, next, entry)
		var conflict *store.ConflictError
		if errors.As(err, &conflict) && op.req.IfRevision == nil && attempt < conflictRetries {
			// Another writer moved the state: start again from it.
			if err := c.reloadLocked(ctx); err != nil {
				return res, err
			}
			continue
		}
		if errors.As(err, &conflict) {
			return res, &api.Error{Status: http.StatusConflict, Err: fmt.Errorf("%s not applied: %w", op.name, err), Revision: uint64(conflict.Current)}
		}
		if err != nil {
			c.storeErrors.Add(1)
			return res, fmt.Errorf("%s not applied: %w", op.name, err)
		}
		from := c.st.Active
		c.st, c.rev = next, rev
		c.publishLocked()
		res.Applied, res.Revision, res.HistoryID = true, uint64(rev), recorded.ID
		c.log.Info("state changed", "operation", op.name, "revision", rev, "actor", actor,
			"from", from, "to", res.To, "prod", describeSplit(next), "instance", op.instance, "forced", res.Forced, "reason", op.req.Reason)
		if moved {
			// Wait for the old active slot to drain only if it lost all of
			// prod; a partial shift is measured over its window alone.
			drain := from
			if next.WeightOf(from) > 0 {
				drain = ""
			}
			c.startMeasure(recorded.ID, drain, entry.Time)
		}
		c.wake()
		return res, nil
	}
}

// refuseLocked records a refused operation in the history and returns the
// 409 that tells the caller why.
func (c *Controller) refuseLocked(ctx context.Context, op operation, entry store.Entry, reason error) error {
	entry.Result, entry.Error = store.Refused, reason.Error()
	if _, err := c.cfg.Store.Record(ctx, entry); err != nil {
		c.storeErrors.Add(1)
		c.log.Error("could not record a refused operation", "operation", op.name, "err", err)
	}
	c.log.Info("operation refused", "operation", op.name, "actor", entry.Actor, "reason", reason)
	return &api.Error{Status: http.StatusConflict, Err: reason, Revision: uint64(c.rev)}
}

// reloadLocked reads the state again after a concurrent change.
func (c *Controller) reloadLocked(ctx context.Context) error {
	st, rev, err := c.cfg.Store.Load(ctx)
	if err != nil {
		c.storeErrors.Add(1)
	}
	if err != nil {
		return fmt.Errorf("reload state after a concurrent change: %w", err)
	}
	c.st, c.rev = st, rev
	c.publishLocked()
	return nil
}

// Swap exchanges the active and standby slots. It is refused with a 409 when
// the standby slot has no routable instance, unless req.Force.
func (c *Controller) Swap(ctx context.Context, req api.ChangeRequest) (api.Change, error) {
	return c.change(ctx, operation{name: "swap", req: req, next: func(st state.State, res *api.Change) (state.State, error) {
		r := c.readinessLocked(st, st.Standby)
		res.TargetRoutable = r.Routable
		res.InFlight = c.slotInFlightLocked(st.Active)
		res.Forced = req.Force && res.TargetRoutable == 0
		return st.Swap(r, req.Force)
	}})
}

// Rollback makes the slot that was active before the last swap active again.
func (c *Controller) Rollback(ctx context.Context, req api.ChangeRequest) (api.Change, error) {
	return c.change(ctx, operation{name: "rollback", req: req, next: func(st state.State, res *api.Change) (state.State, error) {
		var r state.Readiness
		if st.Previous != "" {
			r = c.readinessLocked(st, st.Previous)
		}
		res.TargetRoutable = r.Routable
		res.InFlight = c.slotInFlightLocked(st.Active)
		res.Forced = req.Force && res.TargetRoutable == 0
		return st.Rollback(r, req.Force)
	}})
}

// Drain stops sending new requests to one instance; requests in flight on it
// finish. Draining the last routable instance of a slot that takes traffic
// is refused unless req.Force.
func (c *Controller) Drain(ctx context.Context, slot, addr string, req api.ChangeRequest) (api.Change, error) {
	inst, err := c.lookup(slot, addr)
	if err != nil {
		return api.Change{}, err
	}
	return c.change(ctx, operation{name: "drain", req: req, instance: state.InstanceKey(slot, addr),
		next: func(st state.State, res *api.Change) (state.State, error) {
			res.InFlight = inst.InFlight(route.Prod)
			routable := c.routableLocked(st, slot)
			last := (slot == st.Active || slot == st.Standby) && len(routable) == 1 && routable[0] == inst
			res.Forced = req.Force && last
			return st.Drain(slot, addr, last, req.Force)
		}})
}

// Ready puts a drained instance back in rotation.
func (c *Controller) Ready(ctx context.Context, slot, addr string, req api.ChangeRequest) (api.Change, error) {
	if _, err := c.lookup(slot, addr); err != nil {
		return api.Change{}, err
	}
	return c.change(ctx, operation{name: "ready", req: req, instance: state.InstanceKey(slot, addr),
		next: func(st state.State, res *api.Change) (state.State, error) {
			return st.Ready(slot, addr), nil
		}})
}
