package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// Reload is the part of a new configuration the controller applies while
// it runs.
type Reload struct {
	// Slots is the new membership, in configuration order.
	Slots []Slot
	// Health is the new probe settings.
	Health health.Config
	// Measure is the new measurement window.
	Measure Measure
	// Analysis and Plans are the new rollout settings; a running rollout
	// keeps the analysis it started with.
	Analysis state.Analysis
	Plans    map[string]rollout.Plan
	// Routes are the configuration's version routes.
	Routes []route.Route
	// AffinityKey is the key of affinity.key_file, or nil for the state's.
	AffinityKey []byte
	// Changes says what changed, one line each, for the history.
	Changes []string
	// Request carries the actor, the reason, whether it is a dry run and
	// whether it is forced past the routable-instance check.
	Request wire.ChangeRequest
}

// Reload applies r: instances added are probed at once and take traffic
// once healthy; instances removed leave the routing table at once
// (requests in flight on them finish) and are no longer probed; probe and
// measurement settings apply from the next probe and switch on. It is
// refused (409, and recorded) when a slot it removes is active or standby,
// and, unless r.Request.Force, when it would leave a slot that takes prod
// traffic without a routable instance (strandedLocked); forced, it is
// recorded as forced.
// The state drops drained marks of removed instances and a previous slot
// that is gone, by compare-and-swap; the history records the reload with
// its changes whether or not the state changed.
func (c *Controller) Reload(ctx context.Context, r Reload) (wire.Change, error) {
	actor := r.Request.Actor
	if actor == "" {
		actor = "local"
	}
	c.write.Lock()
	defer c.write.Unlock()
	defer c.flush()
	count := func(result string) {
		c.mu.Lock()
		c.changes[ChangeKey{"reload", result}]++
		c.mu.Unlock()
	}
	slots := members(c.state(), r.Slots, c.running) // c.st changes only under c.write, held
	byName := make(map[string][]string, len(slots))
	for _, s := range slots {
		byName[s.Name] = s.Addrs
	}
	names := namesOf(slots)
	c.mu.Lock()
	cur, rev := c.st, c.rev
	warnings := c.orphansLocked(cur, byName)
	stranded := c.strandedLocked(cur, byName, r.Routes)
	var trial map[string][]string // prod's slots' kept routable instances, to try new probes on
	if old := c.checker.Config(); r.Health.Probe == nil && r.Health.Path != "" && (r.Health.Path != old.Path || r.Health.Timeout != old.Timeout) {
		trial = c.prodKeptLocked(cur, byName, r.Routes)
	}
	c.mu.Unlock()
	stranded = append(stranded, c.failingProbes(ctx, r.Health, trial)...)
	res := wire.Change{Operation: "reload", DryRun: r.Request.DryRun, Revision: uint64(rev), Warnings: warnings}
	entry := store.Entry{Time: time.Now().UTC(), Actor: actor, Operation: "reload", Reason: r.Request.Reason, Changes: r.Changes}
	var reason error
	if err := routesFit(r.Routes, names); err != nil {
		reason = fmt.Errorf("reload refused: %w", err)
	} else if err := cur.Check(names); err != nil {
		reason = err
		if errors.Is(err, state.ErrUnknownSlot) {
			reason = fmt.Errorf("reload refused: the new configuration removes a slot that takes traffic (%w); swap or shift its traffic away first", err)
		}
	} else if len(stranded) > 0 {
		if r.Request.Force {
			res.Forced, entry.Forced = true, true
		} else {
			reason = fmt.Errorf("reload refused: %s (--force applies it anyway)", strings.Join(stranded, "; "))
		}
	}
	if reason != nil {
		if r.Request.DryRun {
			res.Refused = reason.Error()
			return res, nil
		}
		err := c.refuseReload(ctx, entry, reason, rev)
		count("refused")
		return res, err
	}
	if r.Request.DryRun {
		return res, nil
	}
	if err := c.unreachable("reload"); err != nil {
		count("failed")
		return res, err
	}
	next := cur.Fit(byName)
	if cur.Shadow != nil && next.Shadow == nil {
		entry.Changes = append(slices.Clip(entry.Changes), "shadow: to "+cur.Shadow.To+" ended, slot "+cur.Shadow.To+" was removed")
	}
	if sh := next.Shadow; sh != nil {
		if routed := routedBy(r.Routes, next, sh.To); routed != "" {
			// A route of the new configuration sends prod requests to the
			// shadow's target: it takes prod traffic now.
			next, _ = next.StopShadow()
			entry.Changes = append(slices.Clip(entry.Changes), "shadow: to "+sh.To+" ended, "+routedWhy(sh.To, routed))
		}
	}
	var err error
	var recorded store.Entry
	entry.Result = store.Applied
	if next.Equal(cur) {
		recorded, err = c.cfg.Store.Record(ctx, entry)
	} else {
		rev, recorded, err = c.cfg.Store.CompareAndSwap(ctx, rev, next, entry)
	}
	if err != nil {
		c.storeErrors.Add(1)
		count("failed")
		var stale *store.ConflictError
		if errors.As(err, &stale) {
			return res, conflict(fmt.Errorf("reload not applied: %w", err), uint64(stale.Current))
		}
		return res, fmt.Errorf("reload not applied: %w", err)
	}
	c.mu.Lock()
	c.inForceLocked(next, rev, &recorded)
	c.cfg.Slots = r.Slots
	added, removed := c.setSlotsLocked(members(next, r.Slots, c.running))
	r.Measure.setDefaults()
	c.cfg.Measure = r.Measure
	if !r.Analysis.IsZero() {
		c.cfg.Analysis = r.Analysis
	}
	c.cfg.Plans = r.Plans
	c.cfg.Routes = r.Routes
	c.cfg.AffinityKey = r.AffinityKey
	c.publishLocked()
	c.changes[ChangeKey{"reload", "applied"}]++
	res.Applied, res.Revision, res.HistoryID = true, uint64(rev), recorded.ID
	c.mu.Unlock()

	c.checker.Reconfigure(r.Health)
	for _, t := range removed {
		c.checker.Remove(t)
	}
	for _, t := range added {
		c.checker.Add(t)
	}
	c.log.Info("configuration reloaded", "revision", rev, "actor", actor, "changes", slices.Clone(r.Changes),
		"instances_added", len(added), "instances_removed", len(removed))
	return res, nil
}

// routesFit checks that every configured route names a slot that exists:
// one of the configuration's, or one added at runtime.
func routesFit(routes []route.Route, slots []string) error {
	for i, r := range routes {
		if !slices.Contains(slots, r.Slot) {
			return fmt.Errorf("routes[%d].slot: no slot %q (have %s)", i, r.Slot, strings.Join(slots, ", "))
		}
	}
	return nil
}

// RefuseReload records a reload that was refused before it reached the
// controller (an invalid file, a change that needs a restart) and returns
// the error to answer it with: a 400 carrying reason.
func (c *Controller) RefuseReload(ctx context.Context, req wire.ChangeRequest, changes []string, reason error) error {
	if req.DryRun {
		return invalid(reason)
	}
	actor := req.Actor
	if actor == "" {
		actor = "local"
	}
	c.recordRefusedReload(ctx, store.Entry{Time: time.Now().UTC(), Actor: actor, Operation: "reload", Reason: req.Reason, Changes: changes}, reason)
	c.mu.Lock()
	c.changes[ChangeKey{"reload", "refused"}]++
	c.mu.Unlock()
	return invalid(reason)
}

// refuseReload records a reload the controller refused and returns the
// 409 to answer it with.
func (c *Controller) refuseReload(ctx context.Context, entry store.Entry, reason error, rev store.Revision) error {
	c.recordRefusedReload(ctx, entry, reason)
	return conflict(reason, uint64(rev))
}

// recordRefusedReload records entry as a refused reload and logs it: one
// line, the only answer a SIGHUP gets.
func (c *Controller) recordRefusedReload(ctx context.Context, entry store.Entry, reason error) {
	entry.Result, entry.Error = store.Refused, reason.Error()
	if _, err := c.cfg.Store.Record(ctx, entry); err != nil {
		c.storeErrors.Add(1)
		c.log.Error("could not record a refused reload", "err", err)
	}
	c.log.Warn("reload refused; the configuration in force is unchanged", "actor", entry.Actor, "reason", reason)
}

// strandedLocked returns, one line each, the slots that would take prod
// traffic after a reload to members (with cfgRoutes as the
// configuration's routes) without a routable instance: a slot with a share
// of prod's weights (the active slot) or that a route sends to, which has
// routable instances now and of which members keeps none, or which a route
// the reload adds would send to while it has none. What is routable after
// the reload is what is routable now and stays: the same address in the
// same slot keeps its health, a new address has none until its first
// probe passes. A slot that already takes prod traffic with no routable
// instance has nothing to lose: a reload that gives it new ones is the
// repair, not refused.
func (c *Controller) strandedLocked(st state.State, members map[string][]string, cfgRoutes []route.Route) []string {
	before, after := routedSlots(c.cfg.Routes, st), routedSlots(cfgRoutes, st)
	roles := map[string][]string{}
	var order []string
	for _, sh := range st.Prod() {
		role := state.Percent(sh.PerMille) + " of prod"
		if sh.Slot == st.Active {
			role = "active, " + role
		}
		roles[sh.Slot], order = append(roles[sh.Slot], role), append(order, sh.Slot)
	}
	for _, slot := range slices.Sorted(maps.Keys(after)) {
		if roles[slot] == nil {
			order = append(order, slot)
		}
		for _, r := range after[slot] {
			roles[slot] = append(roles[slot], "route "+r)
		}
	}
	var out []string
	for _, slot := range order {
		routable := c.routableLocked(st, slot)
		kept := slices.ContainsFunc(routable, func(i *route.Instance) bool {
			return slices.Contains(members[slot], i.Addr) || slices.Contains(c.registered[slot], i.Addr)
		})
		switch {
		case kept:
		case len(routable) > 0:
			out = append(out, fmt.Sprintf("slots.%s takes prod traffic (%s) and the new configuration keeps none of its %d routable instances: a new address takes traffic only once its probe passes, so add the new instances first and remove the old ones in a later reload",
				slot, strings.Join(roles[slot], ", "), len(routable)))
		case st.WeightOf(slot) == 0 && before[slot] == nil:
			out = append(out, fmt.Sprintf("slots.%s would take prod traffic (%s) and has no routable instance: add the route once the slot is healthy",
				slot, strings.Join(roles[slot], ", ")))
		}
	}
	return out
}

// prodKeptLocked returns, by slot, the instances routable now that stay
// in the slots that take prod traffic after a reload to members.
func (c *Controller) prodKeptLocked(st state.State, members map[string][]string, cfgRoutes []route.Route) map[string][]string {
	out := map[string][]string{}
	slots := slices.Collect(maps.Keys(routedSlots(cfgRoutes, st)))
	for _, sh := range st.Prod() {
		slots = append(slots, sh.Slot)
	}
	for _, slot := range slots {
		for _, i := range c.routableLocked(st, slot) {
			if slices.Contains(members[slot], i.Addr) || slices.Contains(c.registered[slot], i.Addr) {
				out[slot] = append(out[slot], i.Addr)
			}
		}
	}
	return out
}

// failingProbes tries the new health settings once on each instance of
// trial (by slot) and returns, one line each, the slots of which none
// passes: the new settings would take every instance of a slot that takes
// prod traffic out of rotation (a typo in health.path does that).
func (c *Controller) failingProbes(ctx context.Context, h health.Config, trial map[string][]string) []string {
	var out []string
	for _, slot := range slices.Sorted(maps.Keys(trial)) {
		var seen []string
		passed := false
		for _, addr := range trial[slot] {
			ck := c.checker.Try(ctx, h, health.Target{Slot: slot, Addr: addr})
			if ck.Code == health.L7OK {
				passed = true
				break
			}
			seen = append(seen, addr+" "+ck.String())
		}
		if !passed && len(seen) > 0 {
			out = append(out, fmt.Sprintf("slots.%s takes prod traffic and none of its instances passes the new health check (%s): it would leave the routing table", slot, strings.Join(seen, "; ")))
		}
	}
	return out
}

// routedSlots returns, by slot, the routes that send prod requests to it
// with cfg as the configuration's routes and st's set through the API.
func routedSlots(cfg []route.Route, st state.State) map[string][]string {
	out := map[string][]string{}
	for _, r := range cfg {
		sr := state.Route{PathPrefix: r.PathPrefix, Header: r.Header, Value: r.Value, Slot: r.Slot}
		if !slices.ContainsFunc(st.Routes, sr.Same) {
			out[r.Slot] = append(out[r.Slot], describeRoute(sr))
		}
	}
	for _, r := range st.Routes {
		out[r.Slot] = append(out[r.Slot], describeRoute(r))
	}
	return out
}

// orphansLocked warns of every slot that takes traffic in st and that
// members (the new configuration's) leaves without any instance routable
// now: its requests wait for a new instance's first passing probe (up to
// proxy.hold), then fail. A typo in a port does that.
func (c *Controller) orphansLocked(st state.State, members map[string][]string) []string {
	var out []string
	taking := []string{st.Stage()}
	for _, sh := range st.Prod() {
		taking = append(taking, sh.Slot)
	}
	seen := map[string]bool{}
	for _, slot := range taking {
		addrs, ok := members[slot]
		if seen[slot] || !ok {
			continue
		}
		seen[slot] = true
		routable := c.routableLocked(st, slot)
		if len(routable) == 0 {
			continue // nothing to lose
		}
		kept := false
		for _, i := range routable {
			if slices.Contains(addrs, i.Addr) {
				kept = true
			}
		}
		if !kept {
			out = append(out, fmt.Sprintf("slots.%s takes traffic and keeps none of its %d routable instances: its requests wait up to proxy.hold for a new one to pass its probe, then fail", slot, len(routable)))
		}
	}
	return out
}
