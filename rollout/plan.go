package rollout

import (
	"fmt"
	"math"
	"time"

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
	// Shadow, if set, is the gate a deploy following the plan runs
	// before its first step (release's shadow step); nil: none.
	Shadow *wire.ShadowGate
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

// UnknownPlanError is Of's error for a request naming a plan the
// configuration does not have.
type UnknownPlanError struct {
	// Plan is the name asked for.
	Plan string
}

func (e *UnknownPlanError) Error() string {
	return fmt.Sprintf("rollout: no plan %q under rollouts: in the configuration", e.Plan)
}

// Of builds the rollout req asks for from plans, the configuration's
// named plans (req's plan, overridden by what req sets), judged by
// analysis; or says what is wrong with req: an *UnknownPlanError for a
// plan not in plans, another error for a request that is itself wrong.
// Nothing starts.
func Of(req wire.RolloutRequest, plans map[string]Plan, analysis state.Analysis) (state.Rollout, error) {
	bad := func(format string, args ...any) (state.Rollout, error) {
		return state.Rollout{}, fmt.Errorf(format, args...)
	}
	if req.To == "" {
		return bad("rollout: want to, the slot to roll out to")
	}
	var plan Plan
	if req.Plan != "" {
		p, ok := plans[req.Plan]
		if !ok {
			return state.Rollout{}, &UnknownPlanError{Plan: req.Plan}
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
