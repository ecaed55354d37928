// Package rollout is the logic of progressive delivery, without the
// machinery that runs it: plans and the rollouts they build, the judge
// that analyses a canary's counts against its bounds (Judge, a Verdict),
// the weighing of client sources, and the decision of what a running
// rollout does next (Decide: wait, pause, run gates, next step, abort).
// It keeps no state and starts nothing but a step's gates when asked: the
// controller's runner wakes, reads the state and the counts, calls it, and
// applies what it decided as a change of the state.
package rollout

import (
	"fmt"
	"time"

	"github.com/vipswap/vipswap/measure"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
)

// earlyErrors is how many canary errors a breach needs before the canary
// has min_requests: fewer prove nothing.
const earlyErrors = 5

// Samples is where a judgement reads what the data planes counted: a
// *measure.Sampler.
type Samples interface {
	// At returns the latest snapshot taken at or before t.
	At(t time.Time) measure.Snapshot
	// Since returns the oldest snapshot taken at or after t, if any.
	Since(t time.Time) (measure.Snapshot, bool)
	// Live returns the counts now.
	Live() measure.Snapshot
}

// Judge analyses st's running rollout at now: the requests prod sent the
// canary and the stable (active) slot over the analysis window ending at
// now, from the counts s kept, never from before the rollout started,
// against the analysis's bounds. paths are the watched path prefixes the
// counts are by (as the data planes were told). A canary with a share of
// prod and no routable instance (canary is its readiness) is a breach
// whatever the figures. st must have a rollout.
func Judge(st state.State, canary state.Readiness, s Samples, paths []string, now time.Time) Verdict {
	r := st.Rollout
	v := judge(st, s, paths, now)
	if canary.Routable == 0 && r.Current().PerMille > 0 {
		v.Breach = fmt.Sprintf("the canary %s has no routable instance (%d healthy, none routable)", r.To, canary.Healthy)
	}
	return v
}

// judge is Judge on the figures alone.
func judge(st state.State, s Samples, paths []string, now time.Time) Verdict {
	a := st.Rollout.Analysis
	window := a.Window
	from := s.At(now.Add(-window))
	if from.At.Before(st.Rollout.Started) {
		// Judge only what came after the rollout started: traffic from
		// before (an earlier rollout or shift to the same slot) is not
		// this canary's.
		first, ok := s.Since(st.Rollout.Started)
		if !ok {
			return Verdict{Window: now.Sub(st.Rollout.Started)} // no snapshot since the start yet
		}
		from = first
	}
	window = now.Sub(from.At)
	diff := s.Live().Counts.Sub(from.Counts)
	v := Verdict{Canary: judgementOf(diff[route.Prod][st.Rollout.To], paths), Stable: judgementOf(diff[route.Prod][st.Active], paths), Window: window}
	cj, sj := v.Canary, v.Stable
	minimum := float64(max(a.MinRequests, 1))
	v.Enough = cj.Weighed >= minimum
	over := window.Round(100 * time.Millisecond)
	// A path that fails on the canary breaches on its own, however small
	// its share of the traffic: at least earlyErrors errors, above
	// max_error_rate of the path's requests.
	for _, p := range cj.Paths {
		if a.MaxErrorRate > 0 && p.Errors >= earlyErrors && p.Rate() > a.MaxErrorRate {
			weighed := ""
			if uint64(p.Weighed+0.5) != p.Requests {
				weighed = fmt.Sprintf(", weighed as %.0f", p.Weighed)
			}
			v.Breach = fmt.Sprintf("error rate on %s %.2f%% above %.2f%% (%d errors in %d requests%s to %s on canary %s over %s)",
				p.Prefix, p.Rate()*100, a.MaxErrorRate*100, p.Errors, p.Requests, weighed, p.Prefix, st.Rollout.To, over)
			return v
		}
	}
	if !v.Enough {
		// Too few requests to pass, but perhaps enough to fail: at least
		// earlyErrors errors, more than max_error_rate allows of the
		// min_requests a verdict needs, is a breach whatever comes next
		// (a canary too quiet to ever reach min_requests, failing).
		if allowed := a.MaxErrorRate * minimum; a.MaxErrorRate > 0 && cj.Errors >= earlyErrors && cj.WeighedErrors > allowed {
			v.Breach = fmt.Sprintf("error rate %.2f%% (%d errors in %d requests, before the %d a verdict needs: more than %.2f%% of them already) (over %s)",
				cj.Rate()*100, cj.Errors, cj.Requests, a.MinRequests, a.MaxErrorRate*100, over)
		}
		return v
	}
	cr, sr := cj.Rate(), sj.Rate()
	cp, sp := cj.P99, sj.P99
	figures := fmt.Sprintf("over %s: canary %s %.2f%% errors of %d requests%s, p99 %s; stable %s %.2f%%, p99 %s",
		over, st.Rollout.To, cr*100, cj.Requests, cj.weighing(), roundLatency(cp), st.Active, sr*100, roundLatency(sp))
	switch {
	case a.MaxErrorRate > 0 && cr > a.MaxErrorRate:
		v.Breach = fmt.Sprintf("error rate %.2f%% above %.2f%% (%s)", cr*100, a.MaxErrorRate*100, figures)
	case a.MaxP99 > 0 && cp > a.MaxP99:
		v.Breach = fmt.Sprintf("p99 %s above %s (%s)", roundLatency(cp), a.MaxP99, figures)
	case a.MaxErrorRateRatio > 0 && sr > 0 && cr > a.MaxErrorRateRatio*sr:
		v.Breach = fmt.Sprintf("error rate %.2f%% above %g times the stable slot's (%s)", cr*100, a.MaxErrorRateRatio, figures)
	case a.MaxP99Ratio > 0 && sp > 0 && float64(cp) > a.MaxP99Ratio*float64(sp):
		v.Breach = fmt.Sprintf("p99 %s above %g times the stable slot's (%s)", roundLatency(cp), a.MaxP99Ratio, figures)
	}
	return v
}
