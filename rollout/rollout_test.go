package rollout

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vipswap/vipswap/state"
)

var analysis = state.Analysis{Window: 10 * time.Second, MinRequests: 100, MaxErrorRate: 0.01}

// A canary that starts failing (2 % errors against a 1 % bound) is
// aborted within one analysis window of the first failure, long before
// its step's interval is over: at the latest at the first judgement after
// the window.
func TestBreachAbortsWithinOneWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := started(t, Plan{Steps: []int{100, 500, state.Whole}, Interval: 10 * time.Minute}, analysis)
		r := newRunner(t, st, newPlane())
		failFrom := time.Now().Add(30 * time.Second)
		n := 0
		r.errorsOf = func(now time.Time, canary uint64) uint64 {
			if now.Before(failFrom) {
				return 0
			}
			// 2 % of the canary's requests, spread over the ticks.
			n += int(canary)
			errs := n / 50
			n -= errs * 50
			return uint64(errs)
		}
		r.run(5 * time.Minute)
		if len(r.decisions) != 1 || r.decisions[0].d.Action != Abort {
			t.Fatalf("decisions %v; want one abort", r.decisions)
		}
		ab := r.decisions[0]
		if ab.at.Before(failFrom) {
			t.Fatalf("aborted at %s, before the canary failed", ab.at.Sub(failFrom))
		}
		if latest := failFrom.Add(analysis.Window + tick); ab.at.After(latest) {
			t.Errorf("aborted %s after the canary began failing; want within the %s window (the first judgement after it)",
				ab.at.Sub(failFrom), analysis.Window)
		}
		if !strings.Contains(ab.d.Reason, "automatic rollback: error rate") || ab.v.Outcome() != "breach" {
			t.Errorf("abort reason %q, verdict %s; want an error-rate breach", ab.d.Reason, ab.v.Outcome())
		}
		if r.st.Rollout != nil || r.st.WeightOf("green") != 0 {
			t.Errorf("after the abort: rollout %v, green's weight %d; want none, 0", r.st.Rollout, r.st.WeightOf("green"))
		}
		t.Logf("aborted %s after the canary began failing (window %s): %s", ab.at.Sub(failFrom), analysis.Window, ab.d.Reason)
	})
}

// A breach aborts whatever the step's time, the pause and the gates;
// Decide passes the judge's reason on to the history entry.
func TestDecideBreachAbortsAtOnce(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := &state.Rollout{To: "green", Steps: []state.Step{{PerMille: 100, Interval: time.Hour, Pause: true}, {PerMille: state.Whole}},
		StepStarted: t0, Started: t0, Paused: true}
	v := Verdict{Breach: "error rate 5.00% above 1.00% (...)"}
	d := Decide(r, v, Gates{Started: true}, t0.Add(time.Second))
	if d.Action != Abort || d.Reason != "automatic rollback: "+v.Breach || len(d.Changes) != 1 || d.Changes[0] != "analysis: "+v.Breach {
		t.Fatalf("decision %+v; want an abort with the breach as its reason", d)
	}
}

// A rollout taken over by a new runner (a restarted vipswap, another
// node) keeps its step's time: the state says when the step started, so
// the step ends at StepStarted + interval, not an interval after the
// takeover.
func TestResumedRolloutKeepsStepTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = time.Minute
		st := started(t, Plan{Steps: []int{100, 500, state.Whole}, Interval: interval}, analysis)
		stepStarted := st.Rollout.StepStarted
		first := newRunner(t, st, newPlane())
		first.run(40 * time.Second)
		if len(first.decisions) != 0 {
			t.Fatalf("the first runner decided %v in 40s of a 1m step", first.decisions)
		}
		// The node restarts: a new runner, a new sampler, a new data
		// plane counting from zero, the state as the store kept it.
		second := newRunner(t, restart(t, first.st), newPlane())
		second.run(2 * interval)
		if len(second.decisions) == 0 || second.decisions[0].d.Action != Advance {
			t.Fatalf("decisions %v; want the step to advance", second.decisions)
		}
		at := second.decisions[0].at
		if want := stepStarted.Add(interval); at.Before(want) || at.After(want.Add(tick)) {
			t.Fatalf("advanced %s after the step started; want at its interval, %s (not %s after the takeover)",
				at.Sub(stepStarted), interval, interval)
		}
		if got := second.decisions[0].d.Next.PerMille; got != 500 {
			t.Fatalf("advanced to %s; want 50%%", state.Percent(got))
		}
	})
}

// The same as pure functions, at explicit times: a step that started at
// T waits until T+interval, then moves on.
func TestDecideStepTime(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := &state.Rollout{To: "green", Steps: []state.Step{{PerMille: 100, Interval: time.Minute}, {PerMille: 500, Interval: time.Minute}, {PerMille: state.Whole}},
		Started: t0, StepStarted: t0}
	pass := Verdict{Enough: true}
	for _, c := range []struct {
		at   time.Duration
		want Action
	}{{0, Wait}, {40 * time.Second, Wait}, {time.Minute - time.Nanosecond, Wait}, {time.Minute, Advance}, {100 * time.Second, Advance}} {
		if d := Decide(r, pass, Gates{}, t0.Add(c.at)); d.Action != c.want {
			t.Errorf("at T+%s: %s; want %s", c.at, d.Action, c.want)
		}
	}
	r.Step = 1
	if d := Decide(r, pass, Gates{}, t0.Add(time.Minute)); d.Action != Advance || !d.Completes() {
		t.Errorf("the step before 100%%: %s (completes %v); want an advance that completes the rollout", d.Action, d.Completes())
	}
}

// Too few canary requests in the window is a wait, never a pass: the
// step holds past its interval until the canary has min_requests.
func TestTooFewRequestsWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := started(t, Plan{Steps: []int{10, state.Whole}, Interval: 10 * time.Second}, analysis)
		r := newRunner(t, st, newPlane())
		r.rate = 500 // 1 % of 500 a second: 5 canary requests a second, 50 a window of 100 needed
		r.run(time.Minute)
		if len(r.decisions) != 0 {
			t.Fatalf("decisions %v; want none: the canary never had enough requests", r.decisions)
		}
		if r.verdicts["pass"] != 0 || r.verdicts["wait"] == 0 || r.verdicts["breach"] != 0 {
			t.Fatalf("verdicts %v; want only waits", r.verdicts)
		}
		v := Judge(r.st, ready, r.samples, nil, time.Now())
		if v.Enough || v.Outcome() != "wait" || v.Canary.Requests == 0 || v.Canary.Requests >= 100 {
			t.Fatalf("verdict %+v; want a wait on some, fewer than 100, requests", v)
		}
		// A busier canary gets its verdict: the step moves on.
		r.rate = 5000
		r.run(time.Minute)
		if len(r.decisions) == 0 || !r.decisions[0].d.Completes() {
			t.Fatalf("decisions %v; want the rollout to complete once the canary is busy enough", r.decisions)
		}
	})
}

// Too few requests is a wait as a pure function too, past the interval.
func TestDecideWaitsWithoutEnough(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := &state.Rollout{To: "green", Steps: []state.Step{{PerMille: 100, Interval: time.Minute}, {PerMille: state.Whole}}, Started: t0, StepStarted: t0}
	if d := Decide(r, Verdict{Enough: false}, Gates{}, t0.Add(time.Hour)); d.Action != Wait {
		t.Fatalf("too few requests an hour into a 1m step: %s; want wait", d.Action)
	}
}

// One source group sending many times the median's requests counts as
// SourceCap times the median; its good requests cannot dilute the others'
// errors below the bound. One source alone is judged as counted.
func TestJudgeWeighsSources(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := started(t, Plan{Steps: []int{100, state.Whole}, Interval: time.Hour}, analysis)
		p := newPlane()
		r := newRunner(t, st, p)
		r.samples.Take()
		// Three sources with 10 % errors, one flooding with good ones.
		for g := 1; g <= 3; g++ {
			p.serve("green", g, 60, 6)
		}
		p.serve("green", 9, 100000, 0)
		v := Judge(st, ready, r.samples, nil, time.Now())
		if v.Canary.Requests != 100180 || v.Canary.Sources != 4 || v.Canary.Weighed != 300 || v.Canary.WeighedErrors != 18 {
			t.Fatalf("canary judged %+v; want 100180 requests from 4 sources weighed as 300, 18 errors", v.Canary)
		}
		if v.Outcome() != "breach" || !strings.Contains(v.Breach, "weighed as 300 from 4 sources") {
			t.Fatalf("verdict %s %q; want a breach that says how it weighed", v.Outcome(), v.Breach)
		}
		// One source alone is not capped, however many it sends.
		lone := newPlane()
		r = newRunner(t, st, lone)
		r.samples.Take()
		lone.serve("green", 4, 100000, 50)
		v = Judge(st, ready, r.samples, nil, time.Now())
		if v.Canary.Weighed != 100000 || v.Canary.WeighedErrors != 50 || v.Outcome() != "pass" {
			t.Fatalf("a lone source judged as %v requests, %v errors (%s); want as counted, a pass", v.Canary.Weighed, v.Canary.WeighedErrors, v.Outcome())
		}
	})
}

// A canary with a share of prod and no routable instance is a breach
// whatever its figures.
func TestJudgeUnroutableCanary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := started(t, Plan{Steps: []int{100, state.Whole}, Interval: time.Hour}, analysis)
		r := newRunner(t, st, newPlane())
		v := Judge(st, state.Readiness{Healthy: 1}, r.samples, nil, time.Now())
		if want := "the canary green has no routable instance (1 healthy, none routable)"; v.Breach != want {
			t.Fatalf("breach %q; want %q", v.Breach, want)
		}
	})
}

// A step's gates run before it: started once, waited for, and a failure
// aborts with the gate's error.
func TestDecideGates(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	gates := []state.Gate{{HTTP: "http://127.0.0.1:1/ready"}}
	r := &state.Rollout{To: "green", Steps: []state.Step{{PerMille: 100, Interval: time.Minute, Gates: gates}, {PerMille: state.Whole, Gates: gates}},
		Started: t0, StepStarted: t0}
	pass, now := Verdict{Enough: true}, t0.Add(time.Minute)
	for _, c := range []struct {
		g    Gates
		want Action
	}{
		{Gates{}, StartGates},
		{Gates{Started: true}, Wait},
		{Gates{Started: true, Done: true}, Advance},
		{Gates{Started: true, Done: true, Err: fmt.Errorf("refused")}, Abort},
	} {
		if d := Decide(r, pass, c.g, now); d.Action != c.want {
			t.Errorf("gates %+v: %s; want %s", c.g, d.Action, c.want)
		}
	}
	d := Decide(r, pass, Gates{Started: true, Done: true, Err: fmt.Errorf("refused")}, now)
	if d.Reason != "gate failed before 100%: refused" || d.Changes[0] != "gate: refused" {
		t.Errorf("gate abort %q %v", d.Reason, d.Changes)
	}
}
