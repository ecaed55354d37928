package rollout

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/vipswap/vipswap/measure"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// plane counts what a data plane would of prod's requests, per slot,
// since it started: the input of a measure.Sampler.
type plane struct {
	prod map[string]route.Counts
}

func newPlane() *plane { return &plane{prod: map[string]route.Counts{}} }

// serve counts n judged requests to slot from client source group
// source, errs of them errors.
func (p *plane) serve(slot string, source int, n, errs uint64) {
	c := p.prod[slot]
	c.Classes[2] += n - errs
	c.Classes[5] += errs
	c.InstanceErrors += errs
	c.Judged.Requests += n
	c.Judged.Errors += errs
	c.Judged.Sources[source].Requests += n
	c.Judged.Sources[source].Errors += errs
	p.prod[slot] = c
}

func (p *plane) read(l route.Listener) map[string]route.Counts {
	out := map[string]route.Counts{}
	if l == route.Prod {
		for slot, c := range p.prod {
			out[slot] = c
		}
	}
	return out
}

// runner drives a rollout as the controller's does, on the clock it is
// given (a synctest bubble's): a snapshot of the plane's counts every
// second, a judgement and a decision every tick, the decision applied to
// the state. Requests arrive at rate a second, split by prod's weights;
// errorsOf says how many of the canary's n requests at t fail.
type runner struct {
	t       *testing.T
	st      state.State
	plane   *plane
	samples *measure.Sampler
	rate    uint64
	// errorsOf returns how many of n canary requests fail at now.
	errorsOf func(now time.Time, n uint64) uint64
	// decisions are every decision other than Wait, with its time.
	decisions []decided
	// verdicts counts the verdicts by outcome.
	verdicts map[string]int
}

type decided struct {
	at time.Time
	d  Decision
	v  Verdict
}

// tick is how often the runner judges, as control's rolloutTick.
const tick = 250 * time.Millisecond

var ready = state.Readiness{Healthy: 2, Routable: 2}

func newRunner(t *testing.T, st state.State, p *plane) *runner {
	return &runner{t: t, st: st, plane: p, samples: measure.NewSampler(p.read), rate: 1000,
		errorsOf: func(time.Time, uint64) uint64 { return 0 }, verdicts: map[string]int{}}
}

// run drives the rollout for d or until it ends, whichever is first.
func (r *runner) run(d time.Duration) {
	r.t.Helper()
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	end := time.Now().Add(d)
	r.samples.Take()
	lastTake := time.Now()
	for r.st.Rollout != nil && time.Now().Before(end) {
		<-ticker.C
		now := time.Now()
		// A tick's requests, split by prod's weights.
		n := r.rate * uint64(tick) / uint64(time.Second)
		canary := n * uint64(r.st.WeightOf(r.st.Rollout.To)) / state.Whole
		r.plane.serve(r.st.Rollout.To, 1, canary, r.errorsOf(now, canary))
		r.plane.serve(r.st.Active, 1, n-canary, 0)
		if now.Sub(lastTake) >= time.Second {
			r.samples.Take()
			lastTake = now
		}
		v := Judge(r.st, ready, r.samples, nil, now)
		r.verdicts[v.Outcome()]++
		dec := Decide(r.st.Rollout, v, Gates{}, now)
		if dec.Action == Wait {
			continue
		}
		r.decisions = append(r.decisions, decided{at: now, d: dec, v: v})
		switch dec.Action {
		case Abort:
			r.st = r.st.Abort()
		case Pause:
			r.st = r.st.PauseRollout()
		case Advance:
			next, err := r.st.NextStep(ready, now.UTC())
			if err != nil {
				r.t.Fatalf("next step at %s: %v", now, err)
			}
			r.st = next
		default:
			r.t.Fatalf("unexpected decision %s: the plan has no gates", dec.Action)
		}
	}
}

// started returns blue/green with a rollout to green by plan, started now.
func started(t *testing.T, plan Plan, a state.Analysis) state.State {
	t.Helper()
	r, err := Of(wire.RolloutRequest{To: "green", Plan: "canary"}, map[string]Plan{"canary": plan}, a)
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.State{Active: "blue", Standby: "green"}.StartRollout(r, ready, false, time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// restart returns st as a new controller reads it from the store: through
// its JSON, the clock's monotonic reading gone.
func restart(t *testing.T, st state.State) state.State {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var out state.State
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (d decided) String() string {
	return fmt.Sprintf("%s at %s (%s)", d.d.Action, d.at.Format(time.TimeOnly), d.v.Outcome())
}
