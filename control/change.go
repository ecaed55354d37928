package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// operation is one state change the controller runs through change.
type operation struct {
	name     string
	req      wire.ChangeRequest
	instance string // "slot/addr" for drain and ready
	// next computes the new state from st, with c.mu held. It also fills in
	// the parts of res it knows (target health, in-flight, whether a force
	// overrode a check).
	next func(st state.State, res *wire.Change) (state.State, error)
	// changes are recorded in the history entry besides prod's split.
	changes []string
	// describe, if set, adds what the change did to the state it was
	// computed from (cur, with c.mu held), for changes that depend on it.
	describe func(cur state.State) []string
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
//
// Changes run one at a time (c.write), but the store write happens
// without c.mu, so health updates, status reads and the data planes are
// never held up by a disk or a network round trip.
func (c *Controller) change(ctx context.Context, op operation) (wire.Change, error) {
	c.write.Lock()
	defer c.write.Unlock()
	if err := c.unreachable(op.name); err != nil && !op.req.DryRun {
		c.flush()
		c.mu.Lock()
		c.changes[ChangeKey{op.name, "failed"}]++
		c.mu.Unlock()
		return wire.Change{Operation: op.name, DryRun: op.req.DryRun}, err
	}
	res, err := c.run(ctx, op)
	c.flush()
	if err == nil && res.Applied {
		// The state changed: a remote plane that could not apply it is
		// told, not hidden (it is retried).
		res.Warnings = append(res.Warnings, c.remoteWarnings(res.Revision)...)
	}
	result := ""
	var ctlErr *Error
	switch {
	case err == nil && res.Applied:
		result = "applied"
	case errors.As(err, &ctlErr) && ctlErr.Kind == Conflict:
		result = "refused"
	case err != nil:
		result = "failed"
	}
	if result != "" {
		c.mu.Lock()
		c.changes[ChangeKey{op.name, result}]++
		c.mu.Unlock()
	}
	return res, err
}

// run is change's body, with c.write held: c.st and c.rev change only
// under c.write, so what was read under c.mu stays true while the store is
// written without it.
func (c *Controller) run(ctx context.Context, op operation) (wire.Change, error) {
	actor := op.req.Actor
	if actor == "" {
		actor = "local"
	}
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		cur, rev := c.st, c.rev
		res := wire.Change{Operation: op.name, DryRun: op.req.DryRun, Instance: op.instance, Revision: uint64(rev)}
		if op.instance == "" {
			res.From = cur.Active // swap, rollback: from and to are slots
		}
		entry := store.Entry{
			Time: time.Now().UTC(), Actor: actor, Operation: op.name,
			Instance: op.instance, Reason: op.req.Reason,
		}
		var next state.State
		var err error
		if op.req.IfRevision != nil && *op.req.IfRevision != uint64(rev) {
			err = &state.RefusedError{Reason: fmt.Sprintf("%s refused: the state is at revision %d, not %d", op.name, rev, *op.req.IfRevision)}
		} else {
			next, err = op.next(cur, &res)
		}
		var uses []string
		var ended string // a shadow this change ends, and why
		if err == nil {
			next, ended = c.endShadowLocked(next, entry.Time)
			uses = c.slotsUsedLocked(next)
		}
		c.mu.Unlock()
		entry.From = res.From // next may say better: an abort comes from the canary

		var refusal *state.RefusedError
		switch {
		case errors.As(err, &refusal) && op.req.DryRun:
			if op.req.IfRevision != nil && *op.req.IfRevision != uint64(rev) {
				// A dry run changes nothing, the history included.
				return res, conflict(err, uint64(rev))
			}
			res.Refused = refusal.Reason
			return res, nil
		case errors.As(err, &refusal):
			return res, c.refuse(ctx, op, entry, err, rev)
		case err != nil:
			return res, err
		}
		if op.instance == "" {
			if res.To == "" { // a shift or a rollout step names its target itself
				res.To = next.Active
			}
			res.Weights = weights(next, route.Prod)
		}
		if next.Equal(cur) {
			res.InEffect = true
			return res, nil
		}
		if len(next.Prod()) > 1 && (next.AffinityKey == "" || len(cur.Prod()) == 1) {
			// Prod splits anew (a shift or a rollout begins): a new key,
			// so no cookie from an earlier split (harvested by a client
			// to aim at a canary) holds in this one.
			next.AffinityKey = state.NewAffinityKey()
		}
		if why := c.splitRefused(op.name, next); why != "" {
			if op.req.DryRun {
				res.Refused = why
				return res, nil
			}
			return res, invalid(errors.New(why))
		}
		if op.req.DryRun {
			res.Plan = c.plans(ctx, next)
			return res, nil
		}
		entry.To, entry.Forced, entry.Result = res.To, res.Forced, store.Applied
		moved := !slices.Equal(cur.Prod(), next.Prod())
		if moved {
			entry.Changes = append(entry.Changes, "prod: "+describeSplit(next))
		}
		entry.Changes = append(entry.Changes, op.changes...)
		if op.describe != nil {
			entry.Changes = append(entry.Changes, op.describe(cur)...)
		}
		if ended != "" {
			entry.Changes = append(entry.Changes, ended)
		}
		if err := c.remotesReady(ctx, op.name, uses); err != nil {
			return res, err
		}
		newRev, recorded, err := c.cfg.Store.CompareAndSwap(ctx, rev, next, entry)
		var stale *store.ConflictError
		if errors.As(err, &stale) && op.req.IfRevision == nil && attempt < conflictRetries {
			// Another writer moved the state: start again from it.
			if err := c.reload(ctx); err != nil {
				return res, err
			}
			continue
		}
		if errors.As(err, &stale) {
			return res, conflict(fmt.Errorf("%s not applied: %w", op.name, err), uint64(stale.Current))
		}
		if errors.Is(err, store.ErrUnavailable) {
			c.storeErrors.Add(1)
			c.reach.Answered(err)
			return res, &Error{Kind: Unavailable, Err: fmt.Errorf("%s not applied: %w; the node keeps serving the last state it had", op.name, err)}
		}
		if err != nil {
			c.storeErrors.Add(1)
			return res, fmt.Errorf("%s not applied: %w", op.name, err)
		}
		c.mu.Lock()
		c.inForceLocked(next, newRev, &recorded)
		before := namesOf(c.slots)
		added, removed := c.setSlotsLocked(members(next, c.cfg.Slots, c.running))
		after := namesOf(c.slots)
		c.publishLocked()
		if moved {
			// Wait for the old active slot to drain only if it lost all of
			// prod; a partial shift is measured over its window alone.
			drain := cur.Active
			if next.WeightOf(cur.Active) > 0 {
				drain = ""
			}
			c.startMeasure(recorded.ID, newRev, drain, entry.Time)
		}
		c.mu.Unlock()
		c.probe(added, removed)
		c.slotsChanged(before, after)
		res.Applied, res.Revision, res.HistoryID = true, uint64(newRev), recorded.ID
		c.log.Info("state changed", "operation", op.name, "revision", newRev, "actor", actor,
			"from", res.From, "to", res.To, "prod", describeSplit(next), "instance", op.instance, "forced", res.Forced, "reason", op.req.Reason)
		c.wake()
		return res, nil
	}
}

// slotsUsedLocked returns the slots whose instances or weights the
// tables of st would carry: those with instances (configured, running or
// registered) and those a listener sends traffic to. Called with c.mu
// held.
func (c *Controller) slotsUsedLocked(st state.State) []string {
	var out []string
	for _, s := range members(st, c.cfg.Slots, c.running) {
		if len(s.Addrs) > 0 || len(c.registered[s.Name]) > 0 || len(c.instances[s.Name]) > 0 || st.WeightOf(s.Name) > 0 || st.Stage() == s.Name {
			out = append(out, s.Name)
		}
	}
	return out
}

// refuse records a refused operation in the history and returns the
// conflict that tells the caller why.
func (c *Controller) refuse(ctx context.Context, op operation, entry store.Entry, reason error, rev store.Revision) error {
	entry.Result, entry.Error = store.Refused, reason.Error()
	if _, err := c.cfg.Store.Record(ctx, entry); err != nil {
		c.storeErrors.Add(1)
		c.log.Error("could not record a refused operation", "operation", op.name, "err", err)
	}
	c.log.Info("operation refused", "operation", op.name, "actor", entry.Actor, "reason", reason)
	return conflict(reason, uint64(rev))
}

// reload reads the state again after a concurrent change, with c.write
// held.
func (c *Controller) reload(ctx context.Context) error {
	st, rev, err := c.cfg.Store.Load(ctx)
	if err != nil {
		c.storeErrors.Add(1)
		return fmt.Errorf("reload state after a concurrent change: %w", err)
	}
	c.mu.Lock()
	if err := st.Check(namesOf(members(st, c.cfg.Slots, c.running))); err != nil {
		inForce := c.rev
		c.mu.Unlock()
		c.notApplied(rev, fmt.Errorf("it does not fit this node's configuration: %w", err))
		return &Error{Kind: Conflict, Revision: uint64(rev), Err: fmt.Errorf(
			"the stored state at revision %d does not fit this node's configuration (%w): this node keeps serving revision %d and refuses changes until the stored state is repaired (vipswap state import) or its configuration has that slot",
			rev, err, inForce)}
	}
	c.reach.LeaveCopy()
	c.putInForceAndUnlock(st, rev)
	return nil
}

// putInForceAndUnlock makes st at rev the state in force: membership, tables,
// probes and whoever runs managed slots follow. Called with c.write and
// c.mu held; it releases c.mu.
func (c *Controller) putInForceAndUnlock(st state.State, rev store.Revision) {
	c.inForceLocked(st, rev, nil)
	before := namesOf(c.slots)
	added, removed := c.setSlotsLocked(members(st, c.cfg.Slots, c.running))
	after := namesOf(c.slots)
	c.publishLocked()
	c.mu.Unlock()
	c.probe(added, removed)
	c.slotsChanged(before, after)
}

// inForceLocked records st at rev, which the store holds, as the state in
// force, keeps its local copy (cluster mode) and tells waiters; e is the
// history entry of a change this node made, nil for one it adopted.
// Called with c.mu held.
func (c *Controller) inForceLocked(st state.State, rev store.Revision, e *store.Entry) {
	c.stateEventsLocked(c.st, st, rev, e)
	c.st, c.rev = st, rev
	if c.cfg.Shadow != nil {
		c.cfg.Shadow.Set(st.Shadow)
	}
	c.gen++
	c.reach.Applied()
	if c.cfg.LocalCopy != nil {
		c.cfg.LocalCopy.Keep(st, rev)
	}
}

// state returns the state in force.
func (c *Controller) state() state.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// probe starts probing added targets and stops probing removed ones. It
// must be called without c.mu.
func (c *Controller) probe(added, removed []health.Target) {
	for _, t := range removed {
		c.checker.Remove(t)
	}
	for _, t := range added {
		c.checker.Add(t)
	}
}

// Swap exchanges the active and standby slots. It is refused with a 409 when
// the standby slot has no routable instance, unless req.Force.
func (c *Controller) Swap(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	return c.change(ctx, operation{name: "swap", req: req, next: func(st state.State, res *wire.Change) (state.State, error) {
		r := c.readinessLocked(st, st.Standby)
		res.TargetRoutable = r.Routable
		res.InFlight = c.slotInFlightLocked(st.Active)
		res.Forced = req.Force && res.TargetRoutable == 0
		return st.Swap(r, req.Force)
	}})
}

// Rollback makes the slot that was active before the last swap active again.
func (c *Controller) Rollback(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	return c.change(ctx, operation{name: "rollback", req: req, next: func(st state.State, res *wire.Change) (state.State, error) {
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
func (c *Controller) Drain(ctx context.Context, slot, addr string, req wire.ChangeRequest) (wire.Change, error) {
	inst, err := c.lookup(slot, addr)
	if err != nil {
		return wire.Change{}, err
	}
	return c.change(ctx, operation{name: "drain", req: req, instance: state.InstanceKey(slot, addr),
		next: func(st state.State, res *wire.Change) (state.State, error) {
			res.InFlight = inst.InFlight(route.Prod)
			routable := c.routableLocked(st, slot)
			last := (slot == st.Active || slot == st.Standby || st.WeightOf(slot) > 0) && len(routable) == 1 && routable[0] == inst
			res.Forced = req.Force && last
			return st.Drain(slot, addr, last, req.Force)
		}})
}

// Ready puts a drained instance back in rotation.
func (c *Controller) Ready(ctx context.Context, slot, addr string, req wire.ChangeRequest) (wire.Change, error) {
	if _, err := c.lookup(slot, addr); err != nil {
		return wire.Change{}, err
	}
	return c.change(ctx, operation{name: "ready", req: req, instance: state.InstanceKey(slot, addr),
		next: func(st state.State, res *wire.Change) (state.State, error) {
			return st.Ready(slot, addr), nil
		}})
}
