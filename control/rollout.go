package control

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// rolloutTick is how often the rollout's owner looks at its progress and
// judges the canary, besides every state change.
const rolloutTick = 250 * time.Millisecond

// Shift gives slot `to` perMille of prod's new requests (Whole completes
// it, 0 sends everything back to the active slot). Refused like a swap
// when the target has no routable instance, unless req.Force.
func (c *Controller) Shift(ctx context.Context, to string, perMille int, req wire.ChangeRequest) (wire.Change, error) {
	if err := c.knownSlot(to); err != nil {
		return wire.Change{Operation: "shift"}, err
	}
	return c.change(ctx, operation{name: "shift", req: req, next: func(st state.State, res *wire.Change) (state.State, error) {
		res.To = to
		if perMille == 0 { // back to the active slot
			res.From, res.To = to, st.Active
		}
		if st.Rollout != nil {
			return st, &state.RefusedError{Reason: fmt.Sprintf("shift refused: a rollout to %s is running (vipswap abort or promote first)", st.Rollout.To)}
		}
		r := c.readinessLocked(st, to)
		res.TargetRoutable = r.Routable
		res.Forced = req.Force && r.Routable == 0 && perMille > 0
		return st.Shift(to, perMille, r, req.Force)
	}})
}

// StartRollout begins rollout r (its steps, intervals and analysis filled
// in by the caller) from its first step.
func (c *Controller) StartRollout(ctx context.Context, r state.Rollout, req wire.ChangeRequest) (wire.Change, error) {
	if err := c.knownSlot(r.To); err != nil {
		return wire.Change{Operation: "rollout"}, err
	}
	var steps []string
	for _, s := range r.Steps {
		steps = append(steps, state.Percent(s.PerMille))
	}
	return c.change(ctx, operation{name: "rollout", req: req,
		changes: []string{"plan: " + strings.Join(steps, " → ")},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			res.To = r.To
			rd := c.readinessLocked(st, r.To)
			res.TargetRoutable = rd.Routable
			res.Forced = req.Force && rd.Routable == 0
			return st.StartRollout(r, rd, req.Force, time.Now().UTC())
		}})
}

// Promote continues a paused rollout, or with full, completes it at once.
func (c *Controller) Promote(ctx context.Context, full bool, req wire.ChangeRequest) (wire.Change, error) {
	return c.change(ctx, operation{name: "promote", req: req, next: func(st state.State, res *wire.Change) (state.State, error) {
		if st.Rollout != nil {
			res.To = st.Rollout.To
		}
		var rd state.Readiness
		if st.Rollout != nil {
			rd = c.readinessLocked(st, st.Rollout.To)
		}
		return st.Promote(full, rd, time.Now().UTC())
	}})
}

// Abort ends the running rollout and sends all of prod back to the active
// (stable) slot at once. With no rollout and no shift in progress it
// changes nothing.
func (c *Controller) Abort(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	return c.abort(ctx, req, nil)
}

func (c *Controller) abort(ctx context.Context, req wire.ChangeRequest, why []string) (wire.Change, error) {
	return c.change(ctx, operation{name: "abort", req: req, changes: why, next: func(st state.State, res *wire.Change) (state.State, error) {
		// An abort takes prod from the canary (or whichever slot a shift
		// gave a share) back to the active slot.
		res.From = st.Active
		for _, sh := range st.Prod() {
			if sh.Slot != st.Active {
				res.From = sh.Slot
			}
		}
		if st.Rollout != nil {
			res.From = st.Rollout.To
		}
		return st.Abort(), nil
	}})
}

// knownSlot returns a 404 for a slot that does not exist.
func (c *Controller) knownSlot(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.instances[name]; ok {
		return nil
	}
	for _, s := range c.slots {
		if s.Name == name {
			return nil
		}
	}
	return notFound(fmt.Errorf("no slot %q (have %s)", name, strings.Join(c.slotNamesLocked(), ", ")))
}

// wake makes the rollout's owner look at the state now.
func (c *Controller) wake() {
	select {
	case c.wakeup <- struct{}{}:
	default:
	}
}

// runRollouts is the one goroutine that drives rollouts: it judges the
// canary and moves steps, through the same compare-and-swap changes as an
// operator's, until the controller closes. Gates run beside it, so the
// analysis goes on while they do; a gate belongs to one step of one
// rollout and is cancelled, its verdict dropped, when that step ends any
// other way.
func (c *Controller) runRollouts() {
	tick := time.NewTicker(rolloutTick)
	defer tick.Stop()
	var g *gateRun
	defer func() { g.cancel() }()
	var shadowRetry time.Time // when to try again to end a shadow whose time is up
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		case <-c.wakeup:
		case <-g.finished():
		}
		g = c.driveRollout(c.ctx, time.Now(), g)
		c.endShadowIfDue(c.ctx, time.Now(), &shadowRetry)
	}
}

// gateRun is a step's gates running: for which rollout and step, and
// their verdict once done.
type gateRun struct {
	started time.Time // the rollout's start: which rollout
	step    int
	stop    context.CancelFunc
	done    chan struct{}
	err     error // valid once done is closed
}

// cancel stops the gates, if any run. Safe on nil.
func (g *gateRun) cancel() {
	if g != nil {
		g.stop()
	}
}

// status says how the gates stand, for rollout.Decide. Safe on nil.
func (g *gateRun) status() rollout.Gates {
	if g == nil {
		return rollout.Gates{}
	}
	select {
	case <-g.done:
		return rollout.Gates{Started: true, Done: true, Err: g.err}
	default:
		return rollout.Gates{Started: true}
	}
}

// finished is closed when the gates are done; nil (never ready) with none.
func (g *gateRun) finished() <-chan struct{} {
	if g == nil {
		return nil
	}
	return g.done
}

// driveRollout does what the running rollout needs now, as the rollout
// package decides it from the state, the canary's verdict and its gates:
// abort on a breach, wait, pause, start the next step's gates, or move to
// the next step once they passed. It returns the gates still running.
func (c *Controller) driveRollout(ctx context.Context, now time.Time, g *gateRun) *gateRun {
	c.mu.Lock()
	st := c.st
	canary := state.Readiness{}
	var paths []string
	if st.Rollout != nil {
		canary = c.readinessLocked(st, st.Rollout.To)
		routes, _ := c.routesLocked(st)
		paths = watchedPaths(st.Rollout.Analysis, routes)
	}
	c.mu.Unlock()
	r := st.Rollout
	if r == nil {
		g.cancel()
		c.setVerdict(nil)
		return nil
	}
	if g != nil && (!g.started.Equal(r.Started) || g.step != r.Step) {
		g.cancel() // the step ended otherwise: an operator, a restart
		g = nil
	}
	if c.cfg.Leading != nil && !c.cfg.Leading() {
		g.cancel() // another node drives it; this one follows the state
		c.setVerdict(nil)
		return nil
	}
	v := rollout.Judge(st, canary, c.samples, paths, now)
	c.setVerdict(&v)
	d := rollout.Decide(r, v, g.status(), now)
	same := func(cur state.State) bool {
		return cur.Rollout != nil && cur.Rollout.Step == r.Step && cur.Rollout.StepStarted.Equal(r.StepStarted)
	}
	req := wire.ChangeRequest{Actor: "rollout"}
	switch d.Action {
	case rollout.Wait:
		return g
	case rollout.Abort:
		g.cancel()
		req.Reason = d.Reason
		if _, err := c.abort(ctx, req, d.Changes); err != nil && ctx.Err() == nil {
			c.log.Error("could not abort a failing rollout", "err", err)
		}
		return nil
	case rollout.Pause:
		c.change(ctx, operation{name: "rollout pause", req: req, next: func(cur state.State, res *wire.Change) (state.State, error) {
			res.To = r.To
			if !same(cur) {
				return cur, nil
			}
			return cur.PauseRollout(), nil
		}})
		return g
	case rollout.StartGates:
		return c.startGates(ctx, r, d.Next)
	}
	_, err := c.change(ctx, operation{name: "rollout step", req: req, next: func(cur state.State, res *wire.Change) (state.State, error) {
		res.To = r.To
		if !same(cur) {
			return cur, nil // an operator moved it meanwhile
		}
		return cur.NextStep(c.readinessLocked(cur, r.To), now.UTC())
	}})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("rollout step not taken", "to", r.To, "err", err)
	}
	return nil
}

// startGates runs the gates before step next of rollout r beside the
// owner goroutine.
func (c *Controller) startGates(ctx context.Context, r *state.Rollout, next state.Step) *gateRun {
	gctx, stop := context.WithCancel(ctx)
	g := &gateRun{started: r.Started, step: r.Step, stop: stop, done: make(chan struct{})}
	c.wg.Go(func() {
		defer close(g.done)
		g.err = rollout.RunGates(gctx, next.Gates)
	})
	return g
}

// setVerdict keeps the last verdict for status and metrics.
func (c *Controller) setVerdict(v *rollout.Verdict) {
	canary := ""
	if r := c.state().Rollout; r != nil {
		canary = r.To
	}
	c.verdictMu.Lock()
	defer c.verdictMu.Unlock()
	c.verdict = v
	if v != nil {
		c.judgements[v.Outcome()]++
		e := wire.Event{Kind: wire.EventVerdict, Slot: canary, Outcome: v.Outcome()}
		if v.Breach != "" {
			e.Reasons = []string{v.Breach}
		}
		c.events.emit(e)
	}
}

// Judgements returns how many analyses of running rollouts ended with each
// outcome (pass, wait, breach) since the controller started.
func (c *Controller) Judgements() map[string]uint64 {
	c.verdictMu.Lock()
	defer c.verdictMu.Unlock()
	return maps.Clone(c.judgements)
}

// LastVerdict returns the analysis of the running rollout, or nil.
func (c *Controller) LastVerdict() *rollout.Verdict {
	c.verdictMu.Lock()
	defer c.verdictMu.Unlock()
	return c.verdict
}
