package control

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// Plan is a named rollout plan of the configuration (rollouts:).
type Plan struct {
	// Steps are the canary's weights, per-mille, the last Whole.
	Steps []int
	// Interval is each step's length.
	Interval time.Duration
	// Pause waits for a promote after every step but the last.
	Pause bool
	// Gates run before every step.
	Gates []state.Gate
}

// DefaultAnalysis is what a rollout judges by when the configuration says
// nothing: a 10 s window, 100 requests at least, at most 1 % errors.
var DefaultAnalysis = state.Analysis{Window: 10 * time.Second, MinRequests: 100, MaxErrorRate: 0.01}

// PerMille turns a percentage with at most one decimal into per-mille.
func PerMille(pct float64) (int, error) {
	pm := math.Round(pct * 10)
	if pct < 0 || pct > 100 || math.Abs(pct*10-pm) > 1e-6 || math.IsNaN(pct) {
		return 0, fmt.Errorf("weight %g: want a percentage from 0 to 100 with at most one decimal", pct)
	}
	return int(pm), nil
}

// ShiftPercent is Shift with the weight in percent, as the API takes it.
func (c *Controller) ShiftPercent(ctx context.Context, req wire.ShiftRequest) (wire.Change, error) {
	if req.To == "" || req.Weight == nil {
		return wire.Change{Operation: "shift"}, invalid(fmt.Errorf("shift: want to and weight"))
	}
	pm, err := PerMille(*req.Weight)
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
	return c.StartRollout(ctx, r, req.ChangeRequest)
}

// RolloutOf builds the rollout req asks for (a named plan, overridden by
// what req sets), or says what is wrong with it; nothing starts.
func (c *Controller) RolloutOf(req wire.RolloutRequest) (state.Rollout, error) {
	bad := func(format string, args ...any) (state.Rollout, error) {
		return state.Rollout{}, invalid(fmt.Errorf(format, args...))
	}
	if req.To == "" {
		return bad("rollout: want to, the slot to roll out to")
	}
	c.mu.Lock()
	plans, analysis := c.cfg.Plans, c.cfg.Analysis
	c.mu.Unlock()
	var plan Plan
	if req.Plan != "" {
		p, ok := plans[req.Plan]
		if !ok {
			return state.Rollout{}, notFound(fmt.Errorf("rollout: no plan %q under rollouts: in the configuration", req.Plan))
		}
		plan = p
	}
	if len(req.Steps) > 0 {
		plan.Steps = nil
		for _, pct := range req.Steps {
			pm, err := PerMille(pct)
			if err != nil {
				return bad("rollout steps: %v", err)
			}
			if pm == 0 || (len(plan.Steps) > 0 && pm <= plan.Steps[len(plan.Steps)-1]) {
				return bad("rollout steps: want rising weights above 0, got %v", req.Steps)
			}
			plan.Steps = append(plan.Steps, pm)
		}
	}
	if req.Interval != "" {
		d, err := time.ParseDuration(req.Interval)
		if err != nil || d <= 0 {
			return bad("rollout interval: want a duration above zero such as 1m, got %q", req.Interval)
		}
		plan.Interval = d
	}
	if req.Pause != nil {
		plan.Pause = *req.Pause
	}
	if len(plan.Steps) == 0 {
		return bad("rollout: want steps (such as 10,25,50,100) or a plan")
	}
	if plan.Steps[len(plan.Steps)-1] != state.Whole {
		return bad("rollout steps: the last must be 100, got %v", req.Steps)
	}
	if plan.Interval <= 0 {
		plan.Interval = time.Minute
	}
	r := state.Rollout{To: req.To, Plan: req.Plan, Analysis: analysis}
	for i, pm := range plan.Steps {
		r.Steps = append(r.Steps, state.Step{PerMille: pm, Interval: plan.Interval, Pause: plan.Pause && i < len(plan.Steps)-1, Gates: plan.Gates})
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
	out := wire.RolloutStatus{Weights: weights(st, route.Prod)}
	r := st.Rollout
	if r == nil {
		return out
	}
	out.Running, out.To, out.From, out.Plan, out.Step, out.Paused = true, r.To, st.Active, r.Plan, r.Step, r.Paused
	out.Started, out.StepStarted = r.Started, r.StepStarted
	for _, s := range r.Steps {
		out.Steps = append(out.Steps, float64(s.PerMille)/10)
	}
	step := r.Current()
	out.PausesAfter = step.Pause && !r.Paused
	out.StepSeconds = step.Interval.Seconds()
	out.LeftSeconds = max(0, (step.Interval - time.Since(r.StepStarted)).Seconds())
	a := r.Analysis
	out.Analysis = &wire.Analysis{
		WindowSeconds: a.Window.Seconds(), MinRequests: a.MinRequests, MaxErrorRate: a.MaxErrorRate,
		MaxP99MS: ms(a.MaxP99), MaxErrorRateRatio: a.MaxErrorRateRatio, MaxP99Ratio: a.MaxP99Ratio, Paths: a.Paths,
	}
	if v := c.LastVerdict(); v != nil {
		out.Analysis.Canary, out.Analysis.Stable, out.Analysis.Enough = figures(v.Canary), figures(v.Stable), v.Enough
		switch {
		case v.Breach != "":
			out.Analysis.Verdict = v.Breach
		case !v.Enough:
			out.Analysis.Verdict = "waiting for requests"
		default:
			out.Analysis.Verdict = "pass"
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func figures(j Judgement) wire.SlotFigures {
	f := wire.SlotFigures{Requests: j.Requests, Errors: j.Errors, ErrorRate: j.Rate(), WeighedRequests: j.Weighed, Sources: j.Sources,
		P99MS: ms(j.P99), SteeredRequests: j.Steered.Requests, SteeredErrors: j.Steered.Errors}
	for _, p := range j.Paths {
		pf := wire.PathFigures{Prefix: p.Prefix, Requests: p.Requests, Errors: p.Errors, ErrorRate: p.Rate()}
		f.Paths = append(f.Paths, pf)
	}
	return f
}
