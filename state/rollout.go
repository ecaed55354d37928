package state

import (
	"fmt"
	"slices"
	"time"
)

// Rollout is a running progressive shift of prod's traffic to a slot, step
// by step, judged by analysis. It lives in the state, so a restarted
// vipswap (or another node) goes on at the same step.
type Rollout struct {
	// To is the slot traffic moves to (the canary); the active slot is the
	// stable one.
	To string `json:"to"`
	// Plan names the configured plan it follows, if any.
	Plan string `json:"plan,omitempty"`
	// Steps are the plan, in order; the last one's weight is Whole.
	Steps []Step `json:"steps"`
	// Step is the index of the current step.
	Step int `json:"step"`
	// StepStarted is when the current step's weight was set.
	StepStarted time.Time `json:"step_started"`
	// Started is when the rollout began.
	Started time.Time `json:"started"`
	// Paused is true while the rollout waits for a promote.
	Paused bool `json:"paused,omitempty"`
	// Analysis is how the canary is judged.
	Analysis Analysis `json:"analysis"`
}

// Step is one step of a rollout.
type Step struct {
	// PerMille is the canary's share of prod during the step.
	PerMille int `json:"weight_per_mille"`
	// Interval is how long the step lasts before the next (at least, and
	// until its analysis window has seen enough requests).
	Interval time.Duration `json:"interval_ns"`
	// Pause makes the rollout wait for a promote once the step's interval
	// is over.
	Pause bool `json:"pause,omitempty"`
	// Gates must pass before the step's weight is set.
	Gates []Gate `json:"gates,omitempty"`
}

// Gate is a check that must pass before a step: an HTTP GET answering 2xx,
// or a command exiting 0.
type Gate struct {
	// HTTP is a URL to GET.
	HTTP string `json:"http,omitempty"`
	// Command is a program and its arguments.
	Command []string `json:"command,omitempty"`
	// Timeout bounds the check; zero means 30s.
	Timeout time.Duration `json:"timeout_ns,omitempty"`
}

// Analysis says when a canary is failing: over a sliding Window of its
// prod traffic, its error rate or its p99 latency beyond an absolute bound,
// or beyond the stable slot's by a factor. A window with fewer than
// MinRequests requests judges nothing (and holds the step).
type Analysis struct {
	// Window is how much recent traffic is judged.
	Window time.Duration `json:"window_ns"`
	// MinRequests is how many canary requests a window needs to judge.
	MinRequests int `json:"min_requests"`
	// MaxErrorRate is the highest fraction of 5xx and failed answers
	// allowed; zero means no absolute bound.
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// MaxP99 is the highest p99 latency allowed; zero means none.
	MaxP99 time.Duration `json:"max_p99_ns,omitempty"`
	// MaxErrorRateRatio bounds the canary's error rate relative to the
	// stable slot's (when the stable slot has errors at all); zero means
	// no relative bound.
	MaxErrorRateRatio float64 `json:"max_error_rate_ratio,omitempty"`
	// MaxP99Ratio bounds the canary's p99 relative to the stable slot's;
	// zero means none.
	MaxP99Ratio float64 `json:"max_p99_ratio,omitempty"`
	// Paths are path prefixes whose requests are judged apart as well, each
	// against MaxErrorRate: a path that fails on the canary shows even when
	// it is a small part of the traffic. At most MaxPaths.
	Paths []string `json:"paths,omitempty"`
}

// MaxPaths bounds Analysis.Paths.
const MaxPaths = 8

// IsZero reports whether a is the zero Analysis (none set).
func (a Analysis) IsZero() bool {
	return a.Window == 0 && a.MinRequests == 0 && a.MaxErrorRate == 0 && a.MaxP99 == 0 &&
		a.MaxErrorRateRatio == 0 && a.MaxP99Ratio == 0 && len(a.Paths) == 0
}

// Current returns the rollout's current step.
func (r *Rollout) Current() Step { return r.Steps[r.Step] }

// StartRollout begins a rollout r at its first step at now: the canary
// gets the first step's weight (through Shift, refused the same way). One
// rollout at a time.
func (s State) StartRollout(r Rollout, canary Readiness, force bool, now time.Time) (State, error) {
	switch {
	case s.Rollout != nil:
		return s, refused("rollout refused: a rollout to %s is running (vipswap abort ends it)", s.Rollout.To)
	case len(r.Steps) == 0 || r.Steps[len(r.Steps)-1].PerMille != Whole:
		return s, refused("rollout refused: the last step must be 100%%")
	case r.To == s.Active:
		return s, refused("rollout refused: %s is the active slot already", r.To)
	}
	next, err := s.Shift(r.To, r.Steps[0].PerMille, canary, force)
	if err != nil {
		return s, err
	}
	r.Step, r.Started, r.StepStarted, r.Paused = 0, now, now, false
	r.Steps = slices.Clone(r.Steps)
	if r.Steps[0].PerMille == Whole {
		return next, nil // a one-step rollout is a shift to 100%: done
	}
	next.Rollout = &r
	return next, nil
}

// NextStep moves the rollout to its next step at now: its weight is set;
// the last step (100%) completes the shift and ends the rollout.
func (s State) NextStep(canary Readiness, now time.Time) (State, error) {
	r := s.Rollout
	if r == nil {
		return s, refused("no rollout is running")
	}
	i := r.Step + 1
	if i >= len(r.Steps) {
		i = len(r.Steps) - 1
	}
	next, err := s.Shift(r.To, r.Steps[i].PerMille, canary, false)
	if err != nil {
		return s, err
	}
	if r.Steps[i].PerMille == Whole {
		next.Rollout = nil
		return next, nil
	}
	nr := *next.Rollout
	nr.Step, nr.StepStarted, nr.Paused = i, now, false
	next.Rollout = &nr
	return next, nil
}

// PauseRollout makes the rollout wait for a promote.
func (s State) PauseRollout() State {
	if s.Rollout == nil || s.Rollout.Paused {
		return s
	}
	next := s.clone()
	next.Rollout.Paused = true
	return next
}

// Promote continues a paused rollout at its next step, or with full, goes
// to 100% at once and ends it.
func (s State) Promote(full bool, canary Readiness, now time.Time) (State, error) {
	r := s.Rollout
	switch {
	case r == nil:
		return s, refused("promote refused: no rollout is running")
	case full:
		next, err := s.Shift(r.To, Whole, canary, false)
		if err != nil {
			return s, err
		}
		next.Rollout = nil
		return next, nil
	case !r.Paused && r.Steps[r.Step].Pause:
		wait := "its analysis (enough canary requests in its window, and a pass)"
		if left := r.StepStarted.Add(r.Steps[r.Step].Interval).Sub(now).Round(time.Second); left > 0 {
			wait = fmt.Sprintf("the rest of its interval (%s) and its analysis", left)
		}
		return s, refused("promote refused: step %d of %d of the rollout to %s is not paused yet: it waits for %s, then for promote (--full goes to 100%% now)", r.Step+1, len(r.Steps), r.To, wait)
	case !r.Paused:
		return s, refused("promote refused: the rollout to %s is not paused (step %d of %d runs; --full goes to 100%% now)", r.To, r.Step+1, len(r.Steps))
	}
	return s.NextStep(canary, now)
}

// Abort ends the rollout, if any, and sends all of prod back to the active
// (stable) slot at once.
func (s State) Abort() State {
	if s.Rollout == nil && len(s.Weights) == 0 {
		return s
	}
	next := s.clone()
	next.Rollout, next.Weights = nil, nil
	return next
}
