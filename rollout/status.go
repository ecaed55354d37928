package rollout

import (
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// Status returns st's running rollout as the admin API shows it at now:
// its plan, its progress and v, its latest analysis (nil: none yet).
// weights is prod's split in percent, as the routing table has it.
func Status(st state.State, weights map[string]float64, v *Verdict, now time.Time) wire.RolloutStatus {
	out := wire.RolloutStatus{Weights: weights}
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
	out.LeftSeconds = max(0, (step.Interval - now.Sub(r.StepStarted)).Seconds())
	a := r.Analysis
	out.Analysis = &wire.Analysis{
		WindowSeconds: a.Window.Seconds(), MinRequests: a.MinRequests, MaxErrorRate: a.MaxErrorRate,
		MaxP99MS: ms(a.MaxP99), MaxErrorRateRatio: a.MaxErrorRateRatio, MaxP99Ratio: a.MaxP99Ratio, Paths: a.Paths,
	}
	if v != nil {
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
