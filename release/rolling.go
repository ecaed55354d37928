package release

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/wire"
)

// Rolling starts a rolling update and returns at once with its progress;
// follow it with Get.
func (r *Runner) Rolling(req wire.RollingRequest) (wire.Progress, error) {
	bad := func(format string, args ...any) (wire.Progress, error) {
		return wire.Progress{}, &control.Error{Kind: control.Invalid, Err: fmt.Errorf("rolling: "+format, args...)}
	}
	timeout, err := parseDuration("timeout", req.Timeout, 2*time.Minute)
	if err != nil {
		return wire.Progress{}, err
	}
	switch {
	case timeout == 0:
		return bad("timeout: want a duration above zero")
	case req.Slot == "":
		return bad("slot is required")
	case req.MaxUnavailable < 0:
		return bad("max_unavailable: want 1 or more, got %d", req.MaxUnavailable)
	case req.Warmup < 0 || req.Warmup > 100000:
		return bad("warmup: want 0 to 100000 requests per instance, got %d", req.Warmup)
	case len(req.Command) > 0 && req.Command[0] == "":
		return bad("command: the first word must name a program")
	case len(req.Command) > 0 && !r.cfg.AllowRun():
		return bad("a command runs a program on vipswap's host: set admin.allow_run: true in the configuration to allow it")
	case req.DryRun:
		return bad("dry_run is not supported for rolling")
	}
	if err := control.ValidVersion(req.Version); err != nil {
		return bad("%v", err)
	}
	if need := r.cfg.Controller.HealthWait(); timeout < need {
		return bad("timeout %s: a new instance may need %s to be judged healthy (rise probes in a row after an interval, each up to the probe timeout): give at least that", timeout, need)
	}
	if req.MaxUnavailable == 0 {
		req.MaxUnavailable = 1
	}
	if req.WarmupPath == "" {
		req.WarmupPath = "/"
	}
	if !strings.HasPrefix(req.WarmupPath, "/") {
		return bad("warmup_path %q: want a path starting with /", req.WarmupPath)
	}
	ctrl := r.cfg.Controller
	m, err := ctrl.SlotRun(req.Slot)
	if err != nil {
		return wire.Progress{}, err
	}
	slot, _ := slotOf(ctrl.Status(), req.Slot)
	var addrs []string
	for _, i := range slot.Instances {
		addrs = append(addrs, i.Addr)
	}
	if len(addrs) == 0 {
		return bad("slot %s has no instances running", req.Slot)
	}
	if req.MaxUnavailable >= len(addrs) {
		return bad("max_unavailable %d would take all %d instances of %s out of rotation at once: want at most %d", req.MaxUnavailable, len(addrs), req.Slot, len(addrs)-1)
	}
	oldCmd, oldVersion := m.Run.Command, m.Version
	newCmd, newVersion := oldCmd, oldVersion
	if len(req.Command) > 0 {
		newCmd = req.Command
	}
	if req.Version != "" {
		newVersion = req.Version
	}
	return r.start("rolling", req.Slot, newVersion, req.ChangeRequest, func(j *job) error {
		j.mu.Lock()
		j.p.From = ctrl.Status().Active
		j.mu.Unlock()
		for b := 0; b < len(addrs); b += req.MaxUnavailable {
			batch := addrs[b:min(b+req.MaxUnavailable, len(addrs))]
			if err := j.replaceBatch(req, batch, newCmd, newVersion, oldCmd, oldVersion, timeout); err != nil {
				return err
			}
		}
		run := m.Run
		run.Command = newCmd
		return j.step("record", func() (string, error) {
			res, err := ctrl.Rolled(j.r.ctx, req.Slot, run, newVersion, j.req)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("slots.%s runs version %s (revision %d)", req.Slot, newVersion, res.Revision), nil
		})
	})
}

// replaceBatch replaces the instances at addrs: drain, wait until none has
// a request in flight, restart each with the new command, wait until each
// is healthy, warm them up, put them back. If a new one does not become
// healthy, the old command is started again in its place and put back.
func (j *job) replaceBatch(req wire.RollingRequest, addrs, newCmd []string, newVersion string, oldCmd []string, oldVersion string, timeout time.Duration) error {
	ctrl := j.r.cfg.Controller
	names := strings.Join(addrs, ", ")
	// Instances an operator drained stay drained.
	st := ctrl.Status()
	var wasDrained []string
	for _, a := range addrs {
		if i, _ := instanceOf(st, req.Slot, a); i.Drained {
			wasDrained = append(wasDrained, a)
		}
	}
	// putBack puts the instances back in rotation; one the controller
	// refuses (a load balancer that cannot take a change refuses every
	// change) stays drained, and the error says which and how to put it
	// back.
	putBack := func() error {
		var stay []string
		for _, a := range addrs {
			if slices.Contains(wasDrained, a) {
				continue
			}
			if _, err := ctrl.Ready(context.Background(), req.Slot, a, j.req); err != nil {
				stay = append(stay, fmt.Sprintf("%s stays drained (vipswap ready %s %s puts it back): %v", a, req.Slot, a, err))
			}
		}
		if len(stay) > 0 {
			return errors.New(strings.Join(stay, "; "))
		}
		return nil
	}
	// withPutBack is err, and what putBack could not do.
	withPutBack := func(err error) error {
		if perr := putBack(); perr != nil {
			return fmt.Errorf("%w; %w", err, perr)
		}
		return err
	}
	if err := j.step("drain "+names, func() (string, error) {
		var rev uint64
		for _, a := range addrs {
			ch, err := ctrl.Drain(j.r.ctx, req.Slot, a, j.req)
			if err != nil {
				return "", withPutBack(err) // those drained before it
			}
			rev = max(rev, ch.Revision)
		}
		start := time.Now()
		// A load balancer that has not applied the drain (its API failing)
		// still sends requests: the instance is not stopped under them.
		err := j.waitDrained(timeout, "no request in flight on "+names+" (it is drained)", rev, func(st wire.Status) bool {
			for _, a := range addrs {
				if i, _ := instanceOf(st, req.Slot, a); i.InFlight.Total() > 0 {
					return false
				}
			}
			return true
		})
		if err != nil {
			err = withPutBack(err) // said in the step's own error
		}
		return fmt.Sprintf("no request in flight after %s", time.Since(start).Round(time.Millisecond)), err
	}); err != nil {
		return err
	}
	// fail restores the old version on a failed instance; if vipswap is
	// stopping, it only puts the instances back: a restarted vipswap
	// starts every instance anew, with the version the state names.
	fail := func(err error) error {
		if j.r.ctx.Err() != nil {
			return withPutBack(err)
		}
		j.restore(req, addrs, oldCmd, oldVersion, timeout, putBack)
		return err
	}
	before := time.Now()
	if err := j.step("restart "+names, func() (string, error) {
		if err := j.replace(j.r.ctx, req.Slot, addrs, newCmd, newVersion); err != nil {
			return "", err
		}
		return fmt.Sprintf("SIGTERM, then %s (version %s)", strings.Join(newCmd, " "), newVersion), nil
	}); err != nil {
		return fail(err)
	}
	// The old processes are gone: only the new ones answer probes from
	// here, and each must pass Rise of them (it was marked down).
	started := before
	if err := j.step("healthy "+names, func() (string, error) { return j.waitHealthy(req.Slot, addrs, started, timeout) }); err != nil {
		return fail(err)
	}
	if req.Warmup > 0 {
		j.step("warmup "+names, func() (string, error) { return j.warmup(addrs, req.Warmup, req.WarmupPath), nil })
	}
	return j.step("ready "+names, func() (string, error) {
		if err := putBack(); err != nil {
			return "", err
		}
		return "back in rotation", nil
	})
}

// waitHealthy waits until each instance at addrs passed a probe that
// began after since.
func (j *job) waitHealthy(slot string, addrs []string, since time.Time, timeout time.Duration) (string, error) {
	ctrl := j.r.cfg.Controller
	var st wire.Status
	err := j.waitFor(timeout, strings.Join(addrs, ", ")+" to be healthy", func() (bool, error) {
		st = ctrl.Status()
		n := 0
		for _, a := range addrs {
			if i, _ := instanceOf(st, slot, a); freshlyHealthy(i, since) {
				n++
			}
		}
		j.health(n, len(addrs))
		return n == len(addrs), nil
	})
	if err != nil {
		st = ctrl.Status() // the last probe's answer: a failing probe of an unhealthy instance is no event
		var why []string
		for _, a := range addrs {
			if i, _ := instanceOf(st, slot, a); !freshlyHealthy(i, since) {
				why = append(why, a+" "+lastCheck(i))
			}
		}
		return "", fmt.Errorf("%w (%s)", err, strings.Join(why, "; "))
	}
	return fmt.Sprintf("%d of %d healthy after %s", len(addrs), len(addrs), time.Since(since).Round(time.Millisecond)), nil
}

// minRestore is the least time restore gives the old version to be
// healthy again, whatever --timeout says.
const minRestore = 30 * time.Second

// restore starts the old command again at addrs and, once healthy, puts
// the instances back: the slot serves as before the failed step.
func (j *job) restore(req wire.RollingRequest, addrs, oldCmd []string, oldVersion string, timeout time.Duration, putBack func() error) {
	// Getting the old version back is worth more patience than a short
	// --timeout gave the new one: until then the slot serves with less.
	timeout = max(timeout, minRestore)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	j.step("restore "+strings.Join(addrs, ", "), func() (string, error) {
		started := time.Now()
		if err := j.replace(ctx, req.Slot, addrs, oldCmd, oldVersion); err != nil {
			return "", fmt.Errorf("%w; it stays drained", err)
		}
		if _, err := j.waitHealthy(req.Slot, addrs, started, timeout); err != nil {
			return "", fmt.Errorf("the old version is not healthy again: %w; it stays drained", err)
		}
		if err := putBack(); err != nil {
			return "", err
		}
		return fmt.Sprintf("version %s back in rotation", oldVersion), nil
	})
}

// replace restarts the instances at addrs with command, all at once (a
// batch of --max-unavailable takes one stop_timeout, not one each).
func (j *job) replace(ctx context.Context, slot string, addrs, command []string, version string) error {
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			if err := j.r.cfg.Controller.ReplaceInstance(ctx, slot, a, command, version); err != nil {
				errs[i] = fmt.Errorf("%s: %w", a, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
