package rollout

import (
	"time"

	"github.com/vipswap/vipswap/state"
)

// Action is what a running rollout's runner does next.
type Action int

// The actions Decide chooses among.
const (
	// Wait: nothing now. The step's interval runs, the rollout waits for
	// a promote, the canary has too few requests to pass, or the next
	// step's gates still run; the analysis goes on meanwhile.
	Wait Action = iota
	// Abort: end the rollout and send all of prod back to the stable
	// slot; the Decision's Reason and Changes say why.
	Abort
	// Pause: the step is over and waits for a promote.
	Pause
	// StartGates: start the gates before the Decision's Next step.
	StartGates
	// Advance: set the Decision's Next step's weight; when it is the last
	// (Whole) the rollout completes: the canary is promoted.
	Advance
)

// String names the action, for logs and tests.
func (a Action) String() string {
	switch a {
	case Wait:
		return "wait"
	case Abort:
		return "abort"
	case Pause:
		return "pause"
	case StartGates:
		return "start gates"
	case Advance:
		return "advance"
	}
	return "unknown"
}

// Gates is how the gates before a rollout's next step stand, as its
// runner knows them. The zero Gates is none started.
type Gates struct {
	// Started: they were started for the current step.
	Started bool
	// Done: they finished; Err says whether they passed.
	Done bool
	// Err is why the first that failed did, once Done; nil if all
	// passed.
	Err error
}

// Decision is what a running rollout does next.
type Decision struct {
	// Action is what to do.
	Action Action
	// Next is the step Advance moves to and StartGates guards.
	Next state.Step
	// Reason and Changes are an Abort's history entry: why the rollout
	// was rolled back.
	Reason  string
	Changes []string
}

// Completes reports whether the decision ends the rollout by promoting
// the canary: an Advance to the last step (Whole).
func (d Decision) Completes() bool {
	return d.Action == Advance && d.Next.PerMille == state.Whole
}

// Decide says what rollout r does at now, given v, its canary's verdict
// at now, and g, how the next step's gates stand. A breach aborts at
// once, whatever the step's time. Otherwise the step runs until
// StepStarted + its Interval (the times are the state's, so a runner that
// takes a rollout over, after a restart or on another node, keeps the
// step's time) and until the verdict passes; then it pauses when the step
// says so, else runs the next step's gates, if any, and moves on once they
// passed (a failed gate aborts). r must not be nil.
func Decide(r *state.Rollout, v Verdict, g Gates, now time.Time) Decision {
	if v.Breach != "" {
		return Decision{Action: Abort, Reason: "automatic rollback: " + v.Breach, Changes: []string{"analysis: " + v.Breach}}
	}
	step := r.Current()
	if r.Paused || now.Sub(r.StepStarted) < step.Interval || !v.Enough {
		return Decision{Action: Wait} // the step runs, waits for a promote, or has too few requests to pass
	}
	if step.Pause {
		return Decision{Action: Pause}
	}
	next := r.Steps[min(r.Step+1, len(r.Steps)-1)]
	if len(next.Gates) > 0 {
		switch {
		case !g.Started:
			return Decision{Action: StartGates, Next: next}
		case !g.Done:
			return Decision{Action: Wait, Next: next}
		case g.Err != nil:
			return Decision{Action: Abort, Next: next,
				Reason:  "gate failed before " + state.Percent(next.PerMille) + ": " + g.Err.Error(),
				Changes: []string{"gate: " + g.Err.Error()}}
		}
	}
	return Decision{Action: Advance, Next: next}
}
