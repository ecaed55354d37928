package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// ShiftPercent is Shift with the weight in percent, as the API takes it.
func (c *Controller) ShiftPercent(ctx context.Context, req wire.ShiftRequest) (wire.Change, error) {
	if req.To == "" || req.Weight == nil {
		return wire.Change{Operation: "shift"}, invalid(fmt.Errorf("shift: want to and weight"))
	}
	pm, err := rollout.PerMille(*req.Weight)
	if err != nil {
		return wire.Change{Operation: "shift"}, invalid(err)
	}
	return c.Shift(ctx, req.To, pm, req.ChangeRequest)
}

// StartRolloutRequest builds a rollout from req (a named plan, overridden
// by what req sets) and starts it.
func (c *Controller) StartRolloutRequest(ctx context.Context, req wire.RolloutRequest) (wire.Change, error) {
	r, err := c.RolloutOf(req)
	if err != nil {
		return wire.Change{Operation: "rollout"}, err
	}
	if g := c.PlanShadow(req.Plan); g != nil && !req.SkipShadow {
		// The gate promises that no user reaches the new version before
		// the shadow passed; a rollout start, which gives the canary its
		// first step at once, cannot keep that promise: only a deploy
		// runs the gate (before its first step). Said before, not after.
		return wire.Change{Operation: "rollout"}, invalid(fmt.Errorf(
			"rollout: plan %s has a shadow gate (shadow for %s before any user reaches %s), which a rollout start does not run: "+
				"vipswap deploy --strategy rollout --plan %s runs it; or judge a shadow yourself (vipswap shadow start) and start with --skip-shadow",
			req.Plan, g.Duration, req.To, req.Plan))
	}
	return c.StartRollout(ctx, r, req.ChangeRequest)
}

// PlanShadow returns a copy of the shadow gate of the configuration's plan
// name, or nil when it has none (or there is no such plan).
func (c *Controller) PlanShadow(name string) *wire.ShadowGate {
	c.mu.Lock()
	p, ok := c.cfg.Plans[name]
	c.mu.Unlock()
	if !ok || p.Shadow == nil {
		return nil
	}
	g := *p.Shadow
	g.Methods = slices.Clone(g.Methods)
	g.IgnoreFields, g.IgnoreHeaders = slices.Clone(g.IgnoreFields), slices.Clone(g.IgnoreHeaders)
	return &g
}

// RolloutOf builds the rollout req asks for (a named plan, overridden by
// what req sets) from the configuration's plans, or says what is wrong
// with it; nothing starts.
func (c *Controller) RolloutOf(req wire.RolloutRequest) (state.Rollout, error) {
	c.mu.Lock()
	plans, analysis := c.cfg.Plans, c.cfg.Analysis
	c.mu.Unlock()
	r, err := rollout.Of(req, plans, analysis)
	var unknown *rollout.UnknownPlanError
	switch {
	case errors.As(err, &unknown):
		return r, notFound(err)
	case err != nil:
		return r, invalid(err)
	}
	return r, nil
}

// PromoteRequest is Promote as the API takes it.
func (c *Controller) PromoteRequest(ctx context.Context, req wire.PromoteRequest) (wire.Change, error) {
	return c.Promote(ctx, req.Full, req.ChangeRequest)
}

// RolloutStatus returns the running rollout, its progress and its latest
// analysis.
func (c *Controller) RolloutStatus() wire.RolloutStatus {
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	var v *rollout.Verdict
	if st.Rollout != nil {
		v = c.LastVerdict()
	}
	return rollout.Status(st, weights(st, route.Prod), v, time.Now())
}
