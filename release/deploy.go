package release

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/gate"
	"github.com/vipswap/vipswap/wire"
)

// Deploy starts a deploy and returns at once with its progress; follow
// it with Get.
func (r *Runner) Deploy(req wire.DeployRequest) (wire.Progress, error) {
	keep, timeout, err := r.checkDeploy(&req)
	if err != nil {
		return wire.Progress{}, err
	}
	return r.start("deploy", req.Slot, req.Version, req.ChangeRequest, func(j *job) error {
		return j.deploy(req, keep, timeout)
	})
}

// checkDeploy refuses a deploy request that cannot run, before anything
// changes, and fills in its defaults. It returns the keep and timeout
// durations.
func (r *Runner) checkDeploy(req *wire.DeployRequest) (keep, timeout time.Duration, err error) {
	bad := func(format string, args ...any) (time.Duration, time.Duration, error) {
		return 0, 0, &control.Error{Kind: control.Invalid, Err: fmt.Errorf("deploy: "+format, args...)}
	}
	if keep, err = parseDuration("keep", req.Keep, 10*time.Minute); err != nil {
		return 0, 0, err
	}
	if timeout, err = parseDuration("timeout", req.Timeout, 2*time.Minute); err != nil {
		return 0, 0, err
	}
	if timeout == 0 {
		return bad("timeout: want a duration above zero")
	}
	switch {
	case req.Slot == "":
		return bad("slot is required (the slot the new version starts in)")
	case req.Version == "":
		return bad("version is required (what the new instances run; {version} in the command)")
	case req.Strategy == "":
		req.Strategy = "swap"
	case req.Strategy != "swap" && req.Strategy != "rollout":
		return bad("strategy: want swap or rollout, got %q", req.Strategy)
	}
	if req.Strategy == "swap" && (req.Plan != "" || len(req.Steps) > 0 || req.Interval != "") {
		return bad("plan, steps and interval are for --strategy rollout")
	}
	if req.Strategy == "rollout" && req.Plan == "" && len(req.Steps) == 0 {
		return bad("strategy rollout needs a plan or steps (such as 10,50,100)")
	}
	if req.Replicas < 0 || req.Replicas > 100 {
		return bad("replicas: want 1 to 100, got %d", req.Replicas)
	}
	if req.Warmup < 0 || req.Warmup > 100000 {
		return bad("warmup: want 0 to 100000 requests per instance, got %d", req.Warmup)
	}
	if req.WarmupPath == "" {
		req.WarmupPath = "/"
	}
	for _, p := range append([]string{req.WarmupPath}, req.Checks...) {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \r\n") {
			return bad("path %q: want a path starting with / (no spaces)", p)
		}
	}
	if len(req.Command) > 0 && req.Command[0] == "" {
		return bad("command: the first word must name a program")
	}
	if (len(req.Command) > 0 || len(req.Gates) > 0) && !r.cfg.AllowRun() {
		return bad("a command or gate command runs programs on vipswap's host: set admin.allow_run: true in the configuration to allow it")
	}
	if req.DryRun {
		return bad("dry_run is not supported for deploy")
	}
	if req.Shadow == nil && req.Strategy == "rollout" && req.Plan != "" {
		req.Shadow = r.cfg.Controller.PlanShadow(req.Plan) // the plan's gate, unless the request has its own
	}
	if req.Shadow != nil {
		if _, err := checkShadowGate(req.Shadow); err != nil {
			return 0, 0, err
		}
	}
	ctrl := r.cfg.Controller
	if err := control.ValidSlotName(req.Slot); err != nil {
		return bad("%v", err)
	}
	if err := control.ValidVersion(req.Version); err != nil {
		return bad("%v", err)
	}
	if need := ctrl.HealthWait(); timeout < need {
		return bad("timeout %s: a new instance may need %s to be judged healthy (rise probes in a row after an interval, each up to the probe timeout): give at least that", timeout, need)
	}
	if req.Strategy == "rollout" { // a plan that cannot start fails now, not after the slot changed
		if _, err := ctrl.RolloutOf(wire.RolloutRequest{To: req.Slot, Plan: req.Plan, Steps: req.Steps, Interval: req.Interval, SkipShadow: true}); err != nil {
			return bad("%v", err)
		}
	}
	return keep, timeout, nil
}

// deploy is the release's body: start the new version in the slot,
// prepare it, switch prod, drain the old slot and keep it. A failure
// before prod moved undoes what it did.
func (j *job) deploy(req wire.DeployRequest, keep, timeout time.Duration) error {
	ctrl := j.r.cfg.Controller
	st := ctrl.Status()
	from := st.Active
	j.mu.Lock()
	j.p.From = from
	j.mu.Unlock()
	began := time.Now() // the new instances are probed from after this
	var previous *control.ManagedSlot
	created := false
	err := j.step("start", func() (detail string, err error) {
		detail, previous, created, err = j.startSlot(req, st)
		return detail, err
	})
	if err == nil {
		err = j.prepare(req, began, timeout)
	}
	if err == nil {
		err = j.step("switch", func() (string, error) { return j.switchTo(req, from, timeout) })
	}
	if err != nil {
		j.undo(req.Slot, st.Standby, previous, created)
		return err
	}
	if err := j.step("drain", func() (string, error) {
		start := time.Now()
		rev := ctrl.Status().Revision // the switch's, or newer
		err := j.waitDrained(timeout, "slot "+from+" to finish its requests in flight", rev, func(st wire.Status) bool {
			s, _ := slotOf(st, from)
			return s.InFlight.Prod == 0
		})
		return fmt.Sprintf("%s has no prod request in flight (after %s)", from, time.Since(start).Round(time.Millisecond)), err
	}); err != nil {
		return err
	}
	j.keep(from, keep)
	return nil
}

// startSlot runs the new version in req.Slot, st being the status before:
// an existing idle slot is redeployed (previous is what it ran), a new one
// is added (created).
func (j *job) startSlot(req wire.DeployRequest, st wire.Status) (detail string, previous *control.ManagedSlot, created bool, err error) {
	ctrl := j.r.cfg.Controller
	if rs := ctrl.RolloutStatus(); rs.Running {
		return "", nil, false, fmt.Errorf("a rollout to %s is running: promote or abort it first", rs.To)
	}
	if _, exists := slotOf(st, req.Slot); exists {
		if st.Active == req.Slot {
			return "", nil, false, fmt.Errorf("slot %s is the active slot: deploy to the standby (%s) or a new slot", req.Slot, st.Standby)
		}
		j.r.cancelTeardown(req.Slot) // an earlier deploy's old slot is this one's new
		m, err := ctrl.SlotRun(req.Slot)
		if err != nil {
			return "", nil, false, err
		}
		run := m.Run
		if len(req.Command) > 0 {
			run.Command = req.Command
		}
		if req.Replicas > 0 {
			run.Replicas = req.Replicas
		}
		res, err := ctrl.Redeploy(j.r.ctx, req.Slot, run, req.Version, j.req)
		if err != nil {
			return "", nil, false, err
		}
		return fmt.Sprintf("%d × %s (revision %d)", run.Replicas, strings.Join(run.Command, " "), res.Revision), &m, false, nil
	}
	if len(req.Command) == 0 {
		return "", nil, false, fmt.Errorf("slot %s does not exist: give the command that runs the new version", req.Slot)
	}
	run := wire.RunSpec{Command: req.Command, Address: "127.0.0.1:{port}", Replicas: req.Replicas, StopTimeout: 10 * time.Second}
	if m, err := ctrl.SlotRun(st.Active); err == nil {
		run.Address, run.StopTimeout = m.Run.Address, m.Run.StopTimeout
		if run.Replicas == 0 {
			run.Replicas = m.Run.Replicas
		}
	}
	if run.Replicas == 0 {
		run.Replicas = 1
	}
	res, err := ctrl.AddSlot(j.r.ctx, wire.AddSlotRequest{ChangeRequest: j.req, Name: req.Slot, Run: &run, Version: req.Version})
	if err != nil {
		return "", nil, false, err
	}
	if !res.Applied {
		return "", nil, false, fmt.Errorf("slot %s was not added: %s", req.Slot, res.Refused)
	}
	return fmt.Sprintf("new slot, %d × %s (revision %d)", run.Replicas, strings.Join(run.Command, " "), res.Revision), nil, true, nil
}

// undo takes back what a failed deploy did to slot while prod never moved
// to it: an existing slot runs what it ran before (previous), so the next
// deploy does not start from the version that failed; a slot the deploy
// created goes, and stage returns to standby, where it was.
func (j *job) undo(slot, standby string, previous *control.ManagedSlot, created bool) {
	ctrl := j.r.cfg.Controller
	if ctrl.Status().Active == slot {
		return // prod is on it: a failure after the switch keeps it
	}
	why := wire.ChangeRequest{Actor: j.req.Actor, Reason: "deploy " + j.id + " failed"}
	if previous != nil {
		if _, err := ctrl.Redeploy(context.Background(), slot, previous.Run, previous.Version, why); err != nil {
			j.r.cfg.Logger.Warn("could not start the version a failed deploy replaced", "release", j.id, "slot", slot, "err", err)
		}
	}
	if !created {
		return
	}
	why.Force = true
	if ctrl.Status().Standby == slot {
		ctrl.SetStage(context.Background(), wire.StageRequest{ChangeRequest: why, Slot: standby})
	}
	if _, err := ctrl.RemoveSlot(context.Background(), slot, why); err != nil {
		j.r.cfg.Logger.Warn("could not remove the slot a failed deploy added", "release", j.id, "slot", slot, "err", err)
	}
}

// prepare runs the steps before the switch: wait until the new instances
// are healthy, warm them up, point stage at them, run the gates. Prod is
// not touched.
func (j *job) prepare(req wire.DeployRequest, started time.Time, timeout time.Duration) error {
	ctrl := j.r.cfg.Controller
	var addrs []string
	if err := j.step("healthy", func() (string, error) {
		var last wire.SlotStatus
		err := j.waitFor(timeout, "every instance of "+req.Slot+" to be healthy", func() (bool, error) {
			var ok bool
			if last, ok = slotOf(ctrl.Status(), req.Slot); !ok {
				return false, fmt.Errorf("slot %s was removed", req.Slot)
			}
			n := 0
			for _, i := range last.Instances {
				if freshlyHealthy(i, started) {
					n++
				}
			}
			j.health(n, len(last.Instances))
			return n > 0 && n == len(last.Instances), nil
		})
		if err != nil {
			if s, ok := slotOf(ctrl.Status(), req.Slot); ok {
				last = s // the last probes' answers: a failing probe of an unhealthy instance is no event
			}
			var why []string
			for _, i := range last.Instances {
				if !i.Healthy {
					why = append(why, i.Addr+" "+lastCheck(i))
				}
			}
			return "", fmt.Errorf("%w (%s)", err, strings.Join(why, "; "))
		}
		for _, i := range last.Instances {
			addrs = append(addrs, i.Addr)
		}
		return fmt.Sprintf("%d of %d healthy", len(last.Instances), len(last.Instances)), nil
	}); err != nil {
		return err
	}
	if req.Warmup > 0 {
		if err := j.step("warmup", func() (string, error) { return j.warmup(addrs, req.Warmup, req.WarmupPath), nil }); err != nil {
			return err
		}
	}
	var stageURL string
	if err := j.step("stage", func() (string, error) {
		st := ctrl.Status()
		for _, l := range st.Listeners {
			if l.Name == "stage" {
				stageURL = "http://" + loopback(l.Addr)
			}
		}
		if st.Standby == req.Slot {
			return "stage already follows " + req.Slot, nil
		}
		res, err := ctrl.SetStage(j.r.ctx, wire.StageRequest{ChangeRequest: j.req, Slot: req.Slot})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("stage follows %s (revision %d)", req.Slot, res.Revision), nil
	}); err != nil {
		return err
	}
	if req.Shadow != nil {
		d, _ := checkShadowGate(req.Shadow) // checked when the deploy began
		if err := j.step("shadow", func() (string, error) { return j.shadowGate(req, d) }); err != nil {
			return err
		}
	}
	if len(req.Checks) == 0 && len(req.Gates) == 0 {
		return nil
	}
	return j.step("gates", func() (string, error) {
		var passed []string
		for _, p := range req.Checks {
			if err := j.get(stageURL + p); err != nil {
				return "", fmt.Errorf("check %s: %w", p, err)
			}
			passed = append(passed, "GET "+p)
		}
		for _, g := range req.Gates {
			if err := j.gate(g, stageURL, req, timeout); err != nil {
				return "", err
			}
			passed = append(passed, g)
		}
		return "passed: " + strings.Join(passed, "; "), nil
	})
}

// gate runs one gate command on the stage listener.
func (j *job) gate(command, stageURL string, req wire.DeployRequest, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(j.r.ctx, timeout)
	defer cancel()
	env := append(os.Environ(), "VIPSWAP_STAGE_URL="+stageURL, "VIPSWAP_SLOT="+req.Slot, "VIPSWAP_VERSION="+req.Version)
	if self, err := os.Executable(); err == nil {
		// "vipswap" in a gate (vipswap verify) is this binary.
		env = append(env, "PATH="+filepath.Dir(self)+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	out, err := gate.Command(ctx, []string{"/bin/sh", "-c", command}, env)
	if err == nil {
		return nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("did not finish within %s", timeout)
	}
	if last := gate.LastLine(out, 300); last != "" {
		return fmt.Errorf("gate %q: %v: %s", command, err, last)
	}
	return fmt.Errorf("gate %q: %v", command, err)
}

// switchTo moves prod to the deployed slot: a swap, or a rollout that it
// follows until it is promoted or aborted.
func (j *job) switchTo(req wire.DeployRequest, from string, timeout time.Duration) (string, error) {
	ctrl := j.r.cfg.Controller
	// Prod moves only from the slot it was on to the slot this release
	// prepared: a change someone made meanwhile (a swap, stage elsewhere)
	// fails the release instead of switching prod blindly.
	st := ctrl.Status()
	switch {
	case st.Active != from:
		return "", fmt.Errorf("prod moved to %s during the deploy: not switching", st.Active)
	case req.Strategy == "swap" && st.Standby != req.Slot:
		return "", fmt.Errorf("stage follows %s now, not %s (changed during the deploy): not switching", st.Standby, req.Slot)
	}
	change := j.req
	rev := st.Revision
	change.IfRevision = &rev // and nothing changes between this look and the switch
	if req.Strategy == "swap" {
		res, err := ctrl.Swap(j.r.ctx, change)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("swapped %s → %s (revision %d, history %d)", res.From, res.To, res.Revision, res.HistoryID), nil
	}
	// The plan's shadow gate (or the deploy's own) ran before this step.
	rr := wire.RolloutRequest{ChangeRequest: change, To: req.Slot, Plan: req.Plan, Steps: req.Steps, Interval: req.Interval, SkipShadow: true}
	plan, err := ctrl.RolloutOf(rr)
	if err != nil {
		return "", err
	}
	// The rollout gets its steps' intervals and --timeout on top (for
	// the analysis to see enough requests, a paused step's promote): a
	// deploy in a pipeline ends.
	limit := timeout
	for _, s := range plan.Steps {
		limit += s.Interval
	}
	seq := ctrl.LastEvent()
	res, err := ctrl.StartRolloutRequest(j.r.ctx, rr)
	if err != nil {
		return "", err
	}
	began := time.Now()
	// The deploy's own rollout: another may take its place (in a
	// cluster, a node may see only the newest of several states), and
	// that one is not the deploy's to wait for or to abort.
	ours := ctrl.RolloutStatus()
	mine := func(rs wire.RolloutStatus) bool {
		return rs.Running && ours.Running && rs.To == ours.To && rs.Started.Equal(ours.Started)
	}
	var ended *wire.Event // the rollout's end, as the controller told it
	err = j.waitFor(limit, "the rollout to end", func() (bool, error) {
		evs, _ := ctrl.Events(seq)
		for _, e := range evs.Events {
			if e.Kind == wire.EventRollout && e.Slot == req.Slot && e.Revision > res.Revision {
				ended = &e
			}
		}
		seq = evs.Next
		rs := ctrl.RolloutStatus()
		j.mu.Lock()
		j.p.Rollout = &rs
		j.mu.Unlock()
		return !mine(rs), nil
	})
	j.mu.Lock()
	j.p.Rollout = nil
	j.mu.Unlock()
	if err != nil && j.r.ctx.Err() == nil {
		// Too long: the deploy fails, and a failure during a rollout
		// aborts it (its own, and only if nothing changed since the look).
		if aerr := j.abortOwnRollout(mine, "deploy "+j.id+": the rollout did not end within "+limit.String()); aerr != nil {
			return "", fmt.Errorf("%w (its steps' intervals and --timeout), and its abort failed: %v", err, aerr)
		}
		return "", fmt.Errorf("%w (its steps' intervals and --timeout): aborted, prod back on %s", err, from)
	}
	if err != nil {
		// vipswap stops: the rollout is in the state and goes on when it
		// is back; this release ends here.
		return "", err
	}
	if rs := ctrl.RolloutStatus(); rs.Running { // not the deploy's: it ended
		why := "see vipswap history"
		if ended != nil && len(ended.Reasons) > 0 {
			why = strings.Join(ended.Reasons, "; ")
		}
		return "", fmt.Errorf("the rollout to %s was replaced by another (to %s, started %s), which runs on: %s",
			req.Slot, rs.To, rs.Started.UTC().Format(time.RFC3339), why)
	}
	if active := ctrl.Status().Active; active != req.Slot {
		var why string
		if ended != nil {
			why = strings.Join(ended.Reasons, "; ")
		}
		if why == "" {
			// Ended on another node of a cluster (this one adopted the
			// state: its event carries no history entry), or the event
			// is no longer kept: the reason is in the history.
			why = j.abortReason(res.HistoryID)
		}
		return "", fmt.Errorf("the rollout to %s was aborted, prod is back on %s: %s", req.Slot, active, why)
	}
	return fmt.Sprintf("rollout %s → %s promoted after %s", from, req.Slot, time.Since(began).Round(time.Millisecond)), nil
}

// abortOwnRollout aborts the deploy's rollout while it is still the
// one running (mine), only if nothing changed since the look (the
// revision): a change between the look and the abort (a step of the
// rollout, a health change written by another node) makes it look again,
// a few times, rather than leave the rollout running behind a failed
// deploy.
func (j *job) abortOwnRollout(mine func(wire.RolloutStatus) bool, reason string) error {
	ctrl := j.r.cfg.Controller
	var err error
	for range 5 {
		rev := ctrl.Status().Revision
		if !mine(ctrl.RolloutStatus()) {
			return nil
		}
		_, err = ctrl.Abort(context.Background(), wire.ChangeRequest{Actor: j.req.Actor, IfRevision: &rev, Reason: reason})
		var ce *control.Error
		if err == nil || !errors.As(err, &ce) || ce.Kind != control.Conflict {
			return err
		}
	}
	return err
}

// abortReason finds why the rollout that history entry since started was
// aborted, in the newest entries of the history (shared by a cluster's
// nodes).
func (j *job) abortReason(since uint64) string {
	entries, err := j.r.cfg.Controller.History(j.r.ctx, 0, 50)
	if err != nil {
		return "see vipswap history"
	}
	for _, e := range entries {
		if e.ID > since && e.Operation == "abort" && e.Result == "applied" {
			if e.Reason != "" {
				return e.Reason
			}
			if len(e.Changes) > 0 {
				return strings.Join(e.Changes, "; ")
			}
		}
	}
	return "see vipswap history"
}

// keep schedules the old slot's teardown after keep: a slot added at
// runtime is removed then, unless it takes traffic again (a rollback); a
// configured slot stays, as the standby.
func (j *job) keep(old string, keep time.Duration) {
	ctrl := j.r.cfg.Controller
	m, err := ctrl.SlotRun(old)
	if err != nil || m.Configured {
		j.mu.Lock()
		j.p.Kept = old + " stays as the standby (a configured slot, or one vipswap does not start): vipswap rollback returns to it at once"
		j.mu.Unlock()
		return
	}
	until := time.Now().Add(keep).UTC()
	j.mu.Lock()
	j.p.KeepUntil = until
	j.p.Kept = fmt.Sprintf("%s keeps running until %s for an instant rollback, then it is removed (stage then follows another slot)", old, until.Format(time.RFC3339))
	id := j.id
	j.mu.Unlock()
	ctx := j.r.teardown(old) // replaces an earlier deploy's teardown of it
	j.r.wg.Go(func() {
		t := time.NewTimer(keep)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Not in the middle of another release: it may be using the slot
		// or stage.
		if err := j.r.idle(ctx); err != nil || ctx.Err() != nil {
			return
		}
		if now, err := ctrl.SlotRun(old); err != nil || !reflect.DeepEqual(now, m) {
			j.r.cfg.Logger.Info("the old slot of a release is gone or is not the one it kept (removed and added again): left alone", "release", id, "slot", old)
			return
		}
		st := ctrl.Status()
		if st.Active == old || slices.ContainsFunc(st.Listeners, func(l wire.ListenerStatus) bool { return l.Name == "prod" && l.Weights[old] > 0 }) {
			j.r.cfg.Logger.Info("the old slot of a release takes prod traffic again (a rollback): kept", "release", id, "slot", old)
			return
		}
		why := wire.ChangeRequest{Actor: j.req.Actor, Reason: "deploy " + id + ": kept for rollback until " + until.Format(time.RFC3339)}
		if st.Standby == old { // stage follows another idle slot from now on
			next := ""
			for _, s := range st.Slots {
				if s.Name != old && s.Name != st.Active && next == "" {
					next = s.Name
				}
			}
			if next == "" {
				j.r.cfg.Logger.Info("the old slot of a release is the only standby there is: kept", "release", id, "slot", old)
				return
			}
			force := why
			force.Force = true // stage is for testing: an idle slot without healthy instances will do
			if _, err := ctrl.SetStage(j.r.ctx, wire.StageRequest{ChangeRequest: force, Slot: next}); err != nil {
				j.r.cfg.Logger.Warn("could not tear down the old slot of a release", "release", id, "slot", old, "err", err)
				return
			}
		}
		// Requests in flight on it (stage's) get a minute to finish; a
		// route that names it keeps it: the operator sends traffic there.
		if slices.ContainsFunc(st.Routes, func(r wire.RouteStatus) bool { return r.Slot == old }) {
			j.r.cfg.Logger.Warn("the old slot of a release is kept: a route sends requests to it (vipswap route remove, then vipswap slot remove)", "release", id, "slot", old)
			return
		}
		deadline := time.Now().Add(time.Minute)
		tick := time.NewTicker(j.r.cfg.Poll) // requests in flight are a counter: looked at every Poll
		defer tick.Stop()
		for {
			s, ok := slotOf(ctrl.Status(), old)
			if !ok {
				return
			}
			if s.InFlight.Total() == 0 {
				break
			}
			if time.Now().After(deadline) {
				why.Force = true // what is still in flight after a minute is cut off
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		_, err := ctrl.RemoveSlot(j.r.ctx, old, why)
		var ce *control.Error
		switch {
		case errors.As(err, &ce) && ce.Kind == control.NotFound:
		case err != nil:
			j.r.cfg.Logger.Warn("could not tear down the old slot of a release", "release", id, "slot", old, "err", err)
		default:
			j.r.cfg.Logger.Info("tore down the old slot of a release", "release", id, "slot", old)
		}
	})
}
