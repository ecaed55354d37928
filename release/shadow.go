package release

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/wire"
)

// checkShadowGate refuses a shadow gate that cannot run and fills in its
// defaults; it returns its duration.
func checkShadowGate(g *wire.ShadowGate) (time.Duration, error) {
	bad := func(format string, args ...any) (time.Duration, error) {
		return 0, &control.Error{Kind: control.Invalid, Err: fmt.Errorf("deploy: shadow: "+format, args...)}
	}
	d, err := time.ParseDuration(g.Duration)
	if err != nil || d <= 0 || d > control.MaxShadowDuration {
		return bad("duration: want a duration above zero such as 5m, got %q", g.Duration)
	}
	if g.Percent == 0 {
		g.Percent = 100
	}
	if g.Percent < 0.1 || g.Percent > 100 {
		return bad("percent: want 0.1 to 100, got %v", g.Percent)
	}
	if g.MinRequests == 0 {
		g.MinRequests = 100
	}
	if g.MaxErrorRate == nil {
		def := 0.01
		g.MaxErrorRate = &def // absent: 0 is a bound of its own (no error allowed)
	}
	switch {
	case g.MinRequests < 0 || g.MinRequests > 1e9:
		return bad("min_requests: want 1 or more, got %d", g.MinRequests)
	case g.MaxDifferRate < 0 || g.MaxDifferRate > 1 || math.IsNaN(g.MaxDifferRate):
		return bad("max_differ_rate: want a fraction from 0 to 1 (0.001 is 0.1%%), got %v", g.MaxDifferRate)
	case *g.MaxErrorRate < 0 || *g.MaxErrorRate > 1 || math.IsNaN(*g.MaxErrorRate):
		return bad("max_error_rate: want a fraction from 0 to 1, got %v", *g.MaxErrorRate)
	case g.MaxP99Ratio != 0 && (g.MaxP99Ratio < 1 || math.IsNaN(g.MaxP99Ratio)):
		return bad("max_p99_ratio: want a factor of at least 1 (1.2: within 20%%), or 0 for none, got %v", g.MaxP99Ratio)
	}
	return d, nil
}

// shadowGate copies prod's requests to the deployed slot for the gate's
// duration and judges the figures all along: a breach ends it at once.
// The shadow is stopped whatever happens, with the verdict as its
// reason; a failure names the differing requests.
func (j *job) shadowGate(req wire.DeployRequest, d time.Duration) (string, error) {
	ctrl := j.r.cfg.Controller
	g := req.Shadow
	start := j.req
	start.Reason = "deploy " + j.id + ": shadow gate"
	res, err := ctrl.StartShadow(j.r.ctx, wire.ShadowRequest{ChangeRequest: start, To: req.Slot, Percent: g.Percent,
		Methods: g.Methods, Duration: g.Duration, IgnoreFields: g.IgnoreFields, IgnoreHeaders: g.IgnoreHeaders})
	if err != nil {
		return "", fmt.Errorf("could not start the shadow: %w", err)
	}
	var started time.Time
	if sh := ctrl.Shadow(); sh != nil {
		started = sh.Started
	}
	mine := func(sh *wire.Shadow) bool { return sh != nil && sh.To == req.Slot && sh.Started.Equal(started) }
	bounds := rollout.ShadowBounds{MinRequests: g.MinRequests, MaxDifferRate: g.MaxDifferRate, MaxErrorRate: *g.MaxErrorRate, MaxP99Ratio: g.MaxP99Ratio}
	var breach string
	var enough bool
	var last *wire.ShadowFigures
	ended := ""
	// The figures are counters: looked at every Poll (at least 100ms).
	tick := time.NewTicker(max(j.r.cfg.Poll, 100*time.Millisecond))
	defer tick.Stop()
	timer := time.NewTimer(d)
	defer timer.Stop()
	judge := func() bool {
		sh := ctrl.Shadow()
		if !mine(sh) {
			ended = "the shadow ended before its time (stopped, or its slot took prod traffic)"
			return true
		}
		last = sh.Figures
		breach, enough = rollout.JudgeShadow(last, bounds)
		return breach != ""
	}
wait:
	for !judge() {
		select {
		case <-j.r.ctx.Done():
			j.stopShadow(req.Slot, started, "vipswap stopped during the deploy")
			return "", j.r.ctx.Err()
		case <-timer.C:
			judge()
			break wait
		case <-tick.C:
		}
	}
	verdict := "passed"
	switch {
	case ended != "":
		verdict = ended
	case breach != "":
		verdict = breach
	case !enough:
		compared := uint64(0)
		if last != nil {
			compared = last.Same + last.Differ
		}
		verdict = fmt.Sprintf("only %d compared copies in %s, fewer than the %d a pass needs (too little prod traffic, or too many dropped)", compared, d, g.MinRequests)
	}
	diffs := ""
	if last != nil && len(last.Samples) > 0 {
		diffs = "; differing: " + rollout.DescribeDiffs(last.Samples, 3)
	}
	j.stopShadow(req.Slot, started, truncate("deploy "+j.id+": shadow gate "+verdict+diffs, 1000))
	if verdict != "passed" {
		return "", fmt.Errorf("shadow to %s (revision %d): %s%s", req.Slot, res.Revision, verdict, diffs)
	}
	f := last
	return fmt.Sprintf("shadow to %s for %s passed: %d same, %d differing (%.3f%%), %d errors, p99 prod %.1f ms, %s %.1f ms",
		req.Slot, d, f.Same, f.Differ, 100*f.DifferRate, f.Error, f.ProdP99MS, req.Slot, f.TargetP99MS), nil
}

// stopShadow ends the gate's shadow (to slot, started at started), if it
// still runs: another one (an operator's, started after the gate's ended)
// is not the deploy's to stop.
func (j *job) stopShadow(slot string, started time.Time, why string) {
	ctrl := j.r.cfg.Controller
	if sh := ctrl.Shadow(); sh == nil || sh.To != slot || !sh.Started.Equal(started) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(j.r.ctx), 30*time.Second)
	defer cancel()
	if _, err := ctrl.StopShadow(ctx, wire.ChangeRequest{Actor: j.req.Actor, Reason: why}); err != nil {
		j.r.cfg.Logger.Warn("could not stop a deploy's shadow", "release", j.id, "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
