package control

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/gate"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// rolloutTick is how often the rollout's owner looks at its progress and
// judges the canary, besides every state change.
const rolloutTick = 250 * time.Millisecond

// earlyErrors is how many canary errors a breach needs before the canary
// has min_requests: fewer prove nothing.
const earlyErrors = 5

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
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		case <-c.wakeup:
		case <-g.finished():
		}
		g = c.driveRollout(c.ctx, time.Now(), g)
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

// finished is closed when the gates are done; nil (never ready) with none.
func (g *gateRun) finished() <-chan struct{} {
	if g == nil {
		return nil
	}
	return g.done
}

// driveRollout does what the running rollout needs now: abort on a breach,
// wait, pause, start the next step's gates, or move to the next step once
// they passed. It returns the gates still running.
func (c *Controller) driveRollout(ctx context.Context, now time.Time, g *gateRun) *gateRun {
	c.mu.Lock()
	st := c.st
	canary := state.Readiness{}
	if st.Rollout != nil {
		canary = c.readinessLocked(st, st.Rollout.To)
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
	v := c.judge(st, now)
	if canary.Routable == 0 && r.Current().PerMille > 0 {
		v.Breach = fmt.Sprintf("the canary %s has no routable instance (%d healthy, none routable)", r.To, canary.Healthy)
	}
	c.setVerdict(&v)
	if v.Breach != "" {
		g.cancel()
		why := []string{"analysis: " + v.Breach}
		if _, err := c.abort(ctx, wire.ChangeRequest{Actor: "rollout", Reason: "automatic rollback: " + v.Breach}, why); err != nil && ctx.Err() == nil {
			c.log.Error("could not abort a failing rollout", "err", err)
		}
		return nil
	}
	step := r.Current()
	if r.Paused || now.Sub(r.StepStarted) < step.Interval || !v.Enough {
		return g // not yet: the step runs, waits for a promote, or has too few requests to pass
	}
	same := func(cur state.State) bool {
		return cur.Rollout != nil && cur.Rollout.Step == r.Step && cur.Rollout.StepStarted.Equal(r.StepStarted)
	}
	req := wire.ChangeRequest{Actor: "rollout"}
	if step.Pause {
		c.change(ctx, operation{name: "rollout pause", req: req, next: func(cur state.State, res *wire.Change) (state.State, error) {
			res.To = r.To
			if !same(cur) {
				return cur, nil
			}
			return cur.PauseRollout(), nil
		}})
		return g
	}
	next := r.Steps[min(r.Step+1, len(r.Steps)-1)]
	if len(next.Gates) > 0 {
		if g == nil {
			return c.startGates(ctx, r, next)
		}
		select {
		case <-g.done:
		default:
			return g // the gates still run; the analysis goes on meanwhile
		}
		if g.err != nil {
			c.abort(ctx, wire.ChangeRequest{Actor: "rollout", Reason: "gate failed before " + state.Percent(next.PerMille) + ": " + g.err.Error()},
				[]string{"gate: " + g.err.Error()})
			return nil
		}
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
		g.err = runGates(gctx, next.Gates)
	})
	return g
}

// runGates runs a step's gates in order; the first that fails says why.
func runGates(ctx context.Context, gates []state.Gate) error {
	for _, g := range gates {
		timeout := g.Timeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		gctx, cancel := context.WithTimeout(ctx, timeout)
		err := runGate(gctx, g)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

func runGate(ctx context.Context, g state.Gate) error {
	if g.HTTP != "" {
		if err := gate.HTTP(ctx, g.HTTP); err != nil {
			return err
		}
	}
	if len(g.Command) > 0 {
		out, err := gate.Command(ctx, g.Command, nil)
		if err != nil {
			tail := strings.TrimSpace(out)
			if len(tail) > 200 {
				tail = tail[len(tail)-200:]
			}
			return fmt.Errorf("%s: %v: %s", strings.Join(g.Command, " "), err, tail)
		}
	}
	return nil
}

// Verdict is the analysis of a rollout's canary at one moment.
type Verdict struct {
	// Canary and Stable are what prod's plan sent each over the window.
	Canary, Stable Judgement
	// Window is how far back the figures go.
	Window time.Duration
	// Enough reports that the canary had enough requests to be judged.
	Enough bool
	// Breach says which bound the canary broke; empty when none.
	Breach string
}

// Judgement is one slot's figures as the analysis judges them: only the
// requests prod's weights (or an affinity cookie vipswap issued) sent
// there, each client source counting at most SourceCap times the median
// source's requests, so one client cannot outweigh the others.
type Judgement struct {
	// Requests and Errors are the judged requests and errors among them,
	// as counted.
	Requests, Errors uint64
	// Weighed and WeighedErrors are the same after the source cap: the
	// error rate judged is WeighedErrors / Weighed.
	Weighed, WeighedErrors float64
	// Sources is how many source groups sent them (0: the data plane
	// cannot tell sources apart, and nothing was capped).
	Sources int
	// P99 is the instances' latency (request sent to response head) under
	// which 99 % of the judged requests were answered.
	P99 time.Duration
	// Steered counts the requests a pin header or a route sent to the
	// slot: shown, never judged.
	Steered route.Tally
	// Paths are the judged requests under each watched path prefix.
	Paths []PathJudgement
}

// PathJudgement is the judged requests under one path prefix: as
// counted, and weighed by source as a Judgement's.
type PathJudgement struct {
	Prefix string
	route.Tally
	Weighed, WeighedErrors float64
}

// Rate returns the path's error rate judged: WeighedErrors over Weighed.
func (p PathJudgement) Rate() float64 {
	if p.Weighed == 0 {
		return 0
	}
	return p.WeighedErrors / p.Weighed
}

// Rate returns the error rate judged: WeighedErrors over Weighed.
func (j Judgement) Rate() float64 {
	if j.Weighed == 0 {
		return 0
	}
	return j.WeighedErrors / j.Weighed
}

// weighing says how the source cap weighed the requests, when it did:
// " weighed as 74 from 4 sources".
func (j Judgement) weighing() string {
	if j.Sources == 0 || uint64(j.Weighed+0.5) == j.Requests {
		return ""
	}
	return fmt.Sprintf(" weighed as %.0f from %d sources", j.Weighed, j.Sources)
}

// roundLatency keeps three significant digits of d, as a latency is
// worth reading: 7.72ms, 118ms, 1.25s.
func roundLatency(d time.Duration) time.Duration {
	for unit := time.Nanosecond; unit < time.Hour; unit *= 10 {
		if d < 1000*unit {
			return d.Round(unit)
		}
	}
	return d
}

// SourceCap is how many times the median source group's requests one
// source group may count for in a judgement.
const SourceCap = 2

// judgementOf returns what the analysis judges of one slot's counts;
// paths are the prefixes the counts' Judged.Paths are by.
func judgementOf(c route.Counts, paths []string) Judgement {
	j := Judgement{Requests: c.Judged.Requests, Errors: c.Judged.Errors, P99: c.Judged.Latency.Quantile(0.99), Steered: c.Steered}
	j.Weighed, j.WeighedErrors, j.Sources = weigh(c.Judged.Tally, c.Judged.Sources)
	for i, p := range paths[:min(len(paths), route.MaxWatchedPaths)] {
		pj := PathJudgement{Prefix: p, Tally: c.Judged.PathTally(i)}
		pj.Weighed, pj.WeighedErrors, _ = weigh(pj.Tally, c.Judged.Paths[i])
		j.Paths = append(j.Paths, pj)
	}
	return j
}

// weigh returns the requests and errors of total, split by source in
// sources, with each source group counting at most SourceCap times the
// median group's requests (its errors scaled with them), and how many
// groups sent any. A single source is never capped; a data plane that
// reports no groups is taken as counted.
func weigh(total route.Tally, sources [route.SourceGroups]route.Tally) (requests, errors float64, groups int) {
	var ns []uint64
	for _, s := range sources {
		if s.Requests > 0 {
			ns = append(ns, s.Requests)
		}
	}
	if len(ns) == 0 {
		return float64(total.Requests), float64(total.Errors), 0
	}
	slices.Sort(ns)
	limit := SourceCap * ns[(len(ns)-1)/2] // the lower median
	for _, s := range sources {
		if s.Requests == 0 {
			continue
		}
		n := min(s.Requests, limit)
		requests += float64(n)
		errors += float64(s.Errors) * float64(n) / float64(s.Requests)
	}
	return requests, errors, len(ns)
}

// judge analyses st's rollout over its window ending at now.
func (c *Controller) judge(st state.State, now time.Time) Verdict {
	a := st.Rollout.Analysis
	window := a.Window
	from := c.samples.At(now.Add(-window))
	if from.At.Before(st.Rollout.Started) {
		// Judge only what came after the rollout started: traffic from
		// before (an earlier rollout or shift to the same slot) is not
		// this canary's.
		first, ok := c.samples.Since(st.Rollout.Started)
		if !ok {
			return Verdict{Window: now.Sub(st.Rollout.Started)} // no snapshot since the start yet
		}
		from = first
	}
	window = now.Sub(from.At)
	diff := c.samples.Live().Counts.Sub(from.Counts)
	c.mu.Lock()
	routes, _ := c.routesLocked(st)
	c.mu.Unlock()
	paths := watchedPaths(a, routes)
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

// setVerdict keeps the last verdict for status and metrics.
func (c *Controller) setVerdict(v *Verdict) {
	c.verdictMu.Lock()
	defer c.verdictMu.Unlock()
	c.verdict = v
	if v != nil {
		c.judgements[v.Outcome()]++
	}
}

// Outcome names the verdict in one word: "pass", "wait" (too few canary
// requests to judge) or "breach".
func (v *Verdict) Outcome() string {
	switch {
	case v.Breach != "":
		return "breach"
	case !v.Enough:
		return "wait"
	}
	return "pass"
}

// Judgements returns how many analyses of running rollouts ended with each
// outcome (pass, wait, breach) since the controller started.
func (c *Controller) Judgements() map[string]uint64 {
	c.verdictMu.Lock()
	defer c.verdictMu.Unlock()
	return maps.Clone(c.judgements)
}

// LastVerdict returns the analysis of the running rollout, or nil.
func (c *Controller) LastVerdict() *Verdict {
	c.verdictMu.Lock()
	defer c.verdictMu.Unlock()
	return c.verdict
}
