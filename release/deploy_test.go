package release_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// deployCase is a deploy that fails at one step.
type deployCase struct {
	name string
	step string // the step it fails at
	want string // in its error
	req  wire.DeployRequest
	// setup runs before prod is looked at; during, on the test's
	// goroutine, once the deploy has started.
	setup  func(t *testing.T, f *fixture)
	during func(t *testing.T, f *fixture, id string)
	// moves: prod legitimately serves something else meanwhile (a
	// rollout's canary, an operator's swap).
	moves bool
	check func(t *testing.T, f *fixture, p wire.Progress)
}

// v2 is a deploy of version 2.0 to slot with command, checked for
// timeout.
func v2(slot, timeout string, command ...string) wire.DeployRequest {
	return wire.DeployRequest{Slot: slot, Version: "2.0", Command: command, Timeout: timeout, Keep: "1h",
		ChangeRequest: wire.ChangeRequest{Actor: "ci", Reason: "release 2.0"}}
}

// with returns r changed by fn.
func with(r wire.DeployRequest, fn func(*wire.DeployRequest)) wire.DeployRequest {
	fn(&r)
	return r
}

// stepOf returns p's step name, and fails the test without it.
func stepOf(t *testing.T, p wire.Progress, name string) wire.Step {
	t.Helper()
	for _, s := range p.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("release has no step %q: %+v", name, p.Steps)
	return wire.Step{}
}

// shadowGate is a deploy of green whose shadow gate compares the new
// version's answers with prod's ({"slot","version"}), ignoring fields.
func shadowGate(ignore ...string) wire.DeployRequest {
	return with(v2("green", long, "app"), func(r *wire.DeployRequest) {
		r.Shadow = &wire.ShadowGate{Duration: "20s", MinRequests: 20, MaxDifferRate: 0.001, IgnoreFields: ignore}
	})
}

var deployCases = []deployCase{
	{name: "shadow/a plan's shadow gate", step: "shadow", want: "differing: GET / at $.version",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) { r.Strategy, r.Plan = "rollout", "shadowed" })},
	{name: "shadow/the new version answers differently", step: "shadow", want: "differing rate",
		req: shadowGate("slot"),
		check: func(t *testing.T, f *fixture, p wire.Progress) {
			if !strings.Contains(p.Error, "differing: GET / at $.version (200 vs 200)") {
				t.Errorf("error %q: want the differing requests named", p.Error)
			}
			e, err := f.store.Entry(context.Background(), p.HistoryID)
			if err != nil || !strings.Contains(e.Error, "GET / at $.version") {
				t.Errorf("history entry %+v, %v: want it to name the differing requests", e, err)
			}
			if sh := f.ctrl.Shadow(); sh != nil {
				t.Errorf("shadow %+v still runs after the failed gate", sh)
			}
			h, _ := f.ctrl.History(context.Background(), 0, 10)
			if !slices.ContainsFunc(h, func(e wire.HistoryEntry) bool {
				return e.Operation == "shadow stop" && strings.Contains(e.Reason, "shadow gate differing rate")
			}) {
				t.Errorf("history %+v: want the shadow's stop with the verdict as its reason", h)
			}
		}},
	{name: "start/the new version cannot start", step: "start", want: "cannot start",
		req: v2("green", long, "app", "--nostart")},
	{name: "start/a new slot whose version cannot start", step: "start", want: "cannot start",
		req: v2("v2", long, "app", "--nostart")},
	{name: "start/a new slot without a command", step: "start", want: "give the command",
		req: v2("v2", long)},
	{name: "start/the active slot", step: "start", want: "is the active slot",
		req: v2("blue", long, "app")},
	{name: "start/a rollout runs", step: "start", want: "a rollout to green is running",
		req: v2("v2", long, "app"),
		setup: func(t *testing.T, f *fixture) {
			if _, err := f.ctrl.StartRolloutRequest(context.Background(), wire.RolloutRequest{To: "green", Steps: []float64{10, 100}, Interval: "1h"}); err != nil {
				t.Fatal(err)
			}
		}, moves: true},
	{name: "healthy/the new version never passes the probe", step: "healthy", want: "L7STS 503",
		req: v2("green", short, "app", "--sick")},
	{name: "healthy/a new slot that never passes the probe", step: "healthy", want: "L7STS 503",
		req: v2("v2", short, "app", "--sick")},
	{name: "healthy/vipswap stops meanwhile", step: "healthy", want: "vipswap stopped during the release",
		req: v2("green", long, "app", "--sick"),
		during: func(t *testing.T, f *fixture, id string) {
			vstest.WaitFor(t, time.Minute, func() error {
				if p, _ := f.runner.Get(id); len(p.Steps) < 2 || p.Steps[1].Name != "healthy" {
					return fmt.Errorf("release at steps %+v, want it waiting for health", p.Steps)
				}
				return nil
			})
			f.runner.Close() // as vipswap does when it stops
		}},
	{name: "stage/the new slot is out of rotation by then", step: "stage", want: "stage refused",
		req: with(v2("v2", long, "app"), func(r *wire.DeployRequest) { r.Warmup, r.WarmupPath = 1, "/sicken" }),
		setup: func(t *testing.T, f *fixture) {
			f.apps.on("/sicken", func(i *instance) { f.sickenAndWait(i.slot) })
		},
		check: func(t *testing.T, f *fixture, p wire.Progress) {
			if s := stepOf(t, p, "warmup"); s.Result != "ok" {
				t.Errorf("warmup step %+v, want ok", s)
			}
		}},
	// A warm-up does not fail a deploy (it primes caches): a version that
	// answers 500 passes it and fails at the gates' check.
	{name: "gates/a check after a failed warm-up", step: "gates", want: "check /: GET",
		req: with(v2("green", long, "app", "--broken"), func(r *wire.DeployRequest) { r.Warmup, r.Checks = 3, []string{"/"} }),
		check: func(t *testing.T, f *fixture, p wire.Progress) {
			if s := stepOf(t, p, "warmup"); s.Result != "ok" || !strings.Contains(s.Detail, "6 requests to / on 2 instances: 0 answered 2xx, 6 did not") {
				t.Errorf("warmup step %+v, want ok, saying none answered 2xx", s)
			}
		}},
	{name: "gates/a check answers 503", step: "gates", want: "check /status/503: GET http://",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) { r.Checks = []string{"/", "/status/503"} })},
	{name: "gates/a gate command fails", step: "gates", want: "exit status 3: smoke test failed",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) {
			r.Gates = []string{`test "$VIPSWAP_SLOT $VIPSWAP_VERSION" = "green 2.0"`, "echo starting; echo smoke test failed; exit 3"}
		})},
	// The steps before the gate must succeed within the timeout the gate
	// then outlives: not a short one.
	{name: "gates/a gate command outlives the timeout", step: "gates", want: "did not finish within 10s",
		req: with(v2("green", "10s", "app"), func(r *wire.DeployRequest) { r.Gates = []string{"exec sleep 300"} })},
	{name: "switch/an operator swapped meanwhile", step: "switch", want: "prod moved to green during the deploy",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) { r.Checks = []string{"/swap"} }),
		setup: func(t *testing.T, f *fixture) {
			f.apps.on("/swap", func(*instance) {
				if _, err := f.ctrl.Swap(context.Background(), wire.ChangeRequest{Actor: "operator"}); err != nil {
					t.Errorf("the operator's swap: %v", err)
				}
				v, err := f.look()
				if err != nil {
					t.Error(err)
				}
				f.moved.Store(&v) // prod stays where the operator put it
			})
		}, moves: true},
	{name: "switch/the swap is refused", step: "switch", want: "swap refused",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) { r.Checks = []string{"/sicken"} }),
		setup: func(t *testing.T, f *fixture) {
			f.apps.on("/sicken", func(i *instance) { f.sickenAndWait(i.slot) })
		}},
	{name: "switch/the rollout waits for a promote", step: "switch", want: "the rollout to end: not within",
		// Its steps before the switch must succeed within the timeout the
		// switch then waits out: not a short one.
		req:   with(v2("green", "10s", "app"), func(r *wire.DeployRequest) { r.Strategy, r.Plan = "rollout", "paused" }),
		moves: true},
	{name: "switch/the rollout is aborted", step: "switch", want: "the rollout to green was aborted, prod is back on blue",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) {
			r.Strategy, r.Steps, r.Interval = "rollout", []float64{50, 100}, "1h"
		}),
		during: func(t *testing.T, f *fixture, id string) {
			vstest.WaitFor(t, time.Minute, func() error {
				if rs := f.ctrl.RolloutStatus(); !rs.Running {
					return fmt.Errorf("no rollout runs: %+v", rs)
				}
				return nil
			})
			f.sickenAndWait("green") // the canary breaks: the analysis aborts
		},
		check: func(t *testing.T, f *fixture, p wire.Progress) {
			if strings.HasSuffix(p.Error, "see vipswap history") {
				t.Errorf("error %q; want the analysis's reason for the abort", p.Error)
			}
		}, moves: true},
	// In a cluster a node may see only the newest of several states (its
	// watch lagged, the read a second found the last): here the
	// deploy's rollout was aborted and another begun to the same slot.
	// The deploy's own rollout ended: the deploy ends (it does not wait
	// for the other, nor abort it when it tires).
	{name: "switch/another rollout took the deploy's place", step: "switch", want: "the rollout to green was replaced by another",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) {
			r.Strategy, r.Steps, r.Interval = "rollout", []float64{50, 100}, "1h"
		}),
		during: func(t *testing.T, f *fixture, id string) {
			vstest.WaitFor(t, time.Minute, func() error {
				if rs := f.ctrl.RolloutStatus(); !rs.Running {
					return fmt.Errorf("no rollout runs: %+v", rs)
				}
				return nil
			})
			ctx := context.Background()
			st, rev, err := f.store.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			r := *st.Rollout
			next, err := st.Abort().StartRollout(r, state.Readiness{Healthy: 2, Routable: 2}, false, time.Now().Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.store.CompareAndSwap(ctx, rev, next, store.Entry{
				Time: time.Now().UTC(), Actor: "node-b", Operation: "rollout", To: "green", Result: store.Applied,
				Changes: []string{"aborted, then started again"},
			}); err != nil {
				t.Fatal(err)
			}
			f.wait(id)
			// The other rollout is not the deploy's to end: it runs on
			// until its owner ends it.
			if rs := f.ctrl.RolloutStatus(); !rs.Running || rs.To != "green" || !rs.Started.Equal(next.Rollout.Started) {
				t.Errorf("the other rollout: %+v; want it running still", rs)
			}
			if _, err := f.ctrl.Abort(ctx, wire.ChangeRequest{Actor: "node-b"}); err != nil {
				t.Error(err)
			}
			// Green ran the other rollout's canary when the deploy
			// failed: the deploy left its version alone.
			v, err := f.look()
			if err != nil {
				t.Error(err)
			}
			f.moved.Store(&v)
		},
		moves: true},
	// In a cluster the node that drives rollouts may not be the one that
	// runs the deploy: the abort then arrives through the store, and its
	// reason is in the history entry that node wrote, not in an event.
	{name: "switch/the rollout is aborted on another node", step: "switch", want: "node b: the canary's p99 breached",
		req: with(v2("green", long, "app"), func(r *wire.DeployRequest) {
			r.Strategy, r.Steps, r.Interval = "rollout", []float64{50, 100}, "1h"
		}),
		during: func(t *testing.T, f *fixture, id string) {
			vstest.WaitFor(t, time.Minute, func() error {
				if rs := f.ctrl.RolloutStatus(); !rs.Running {
					return fmt.Errorf("no rollout runs: %+v", rs)
				}
				return nil
			})
			// Another node aborts: it writes the store, as its controller
			// would, and this node adopts the state.
			ctx := context.Background()
			st, rev, err := f.store.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := f.store.CompareAndSwap(ctx, rev, st.Abort(), store.Entry{
				Time: time.Now().UTC(), Actor: "node-b", Operation: "abort", From: "green", To: st.Active,
				Reason: "node b: the canary's p99 breached", Result: store.Applied,
			}); err != nil {
				t.Fatal(err)
			}
		}, moves: true},
}

// TestDeployFailureLeavesProd: a deploy that fails at any of its steps
// leaves prod as it was (its slot, weights, instances, the stored state,
// the routing table; a client of prod sees only the old version, and no
// failure), the slot it deployed to runs what it ran (or is gone, if the
// deploy added it), its progress names the step, and its history entry
// survives a state export and import.
func TestDeployFailureLeavesProd(t *testing.T) {
	start := time.Now()
	for _, c := range deployCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each case has its own controller, proxy, store and instances
			began := time.Now()
			f := newFixture(t)
			if c.setup != nil {
				c.setup(t, f)
			}
			before := f.view()
			tables := len(f.plane.history())
			l := f.startLoad()
			p, err := f.runner.Deploy(c.req)
			if err != nil {
				t.Fatalf("deploy refused before it started: %v", err)
			}
			if c.during != nil {
				c.during(t, f, p.ID)
			}
			p = f.wait(p.ID)
			got := l.end()
			t.Logf("%s: deploy %s, %d prod requests answered %v", time.Since(began).Round(time.Millisecond), p.State, got.ok, got.by)

			if p.State != "failed" || p.FailedStep != c.step || !strings.Contains(p.Error, c.want) {
				t.Fatalf("deploy %s at step %q: %s; want failed at %q saying %q\nsteps: %+v", p.State, p.FailedStep, p.Error, c.step, c.want, p.Steps)
			}
			oneLine(t, "error", p.Error)
			if last := p.Steps[len(p.Steps)-1]; last.Name != c.step || last.Result != "failed" {
				t.Errorf("last step %+v; want %s failed", last, c.step)
			}
			if p.Failed != 0 || got.failed != 0 {
				t.Errorf("prod failed %d requests (release counted %d): %v", got.failed, p.Failed, got.errs)
			}
			if m := f.moved.Load(); m != nil {
				before = *m
			}
			if !c.moves {
				if len(got.by) != 1 || got.by["blue 1.0"] == 0 {
					t.Errorf("prod answered %v; want blue 1.0 alone", got.by)
				}
				for _, tb := range f.plane.history()[tables:] {
					if prodRouting(tb) != prodRouting(f.plane.history()[tables-1]) {
						t.Errorf("a table published during the deploy routed prod as %s; before: %s", prodRouting(tb), prodRouting(f.plane.history()[tables-1]))
						break
					}
				}
			}
			same(t, before, f.view())
			if c.check != nil {
				c.check(t, f, p)
			}
			checkEntry(t, f, p, "deploy")
		})
	}
	t.Cleanup(func() { // after the parallel cases
		t.Logf("%d failed deploys in %s", len(deployCases), time.Since(start).Round(time.Millisecond))
	})
}

// TestDeployShadowGatePasses: a new version that answers as prod does but
// for the fields ignored passes its shadow gate, then takes prod; the
// history holds the shadow's start and stop, and none runs afterwards.
func TestDeployShadowGatePasses(t *testing.T) {
	f := newFixture(t)
	l := f.startLoad()
	req := shadowGate("slot", "version")
	// Enough time for a handful of copies on a busy machine: the load
	// sends one request at a time.
	req.Shadow.Duration, req.Shadow.MinRequests = "3s", 5
	p, err := f.runner.Deploy(req)
	if err != nil {
		t.Fatal(err)
	}
	p = f.wait(p.ID)
	got := l.end()
	if p.State == "failed" {
		t.Fatalf("deploy failed at %s: %s", p.FailedStep, p.Error)
	}
	if s := stepOf(t, p, "shadow"); s.Result != "ok" || !strings.Contains(s.Detail, "passed") {
		t.Errorf("shadow step %+v, want passed", s)
	}
	t.Logf("shadow step: %s", stepOf(t, p, "shadow").Detail)
	if got.failed != 0 {
		t.Errorf("prod failed %d requests: %v", got.failed, got.errs)
	}
	if st := f.ctrl.Status(); st.Active != "green" || st.Shadow != nil {
		t.Errorf("active %s, shadow %+v: want green and none", st.Active, st.Shadow)
	}
}

func TestDeployRefusesABadShadowGate(t *testing.T) {
	f := newFixture(t)
	for _, g := range []wire.ShadowGate{
		{Duration: ""}, {Duration: "1s", Percent: 200}, {Duration: "1s", MaxDifferRate: 2}, {Duration: "1s", MaxP99Ratio: 0.5},
	} {
		req := v2("green", long, "app")
		req.Shadow = &g
		if _, err := f.runner.Deploy(req); err == nil || !strings.Contains(err.Error(), "shadow") {
			t.Errorf("%+v: %v, want refused naming the shadow", g, err)
		}
	}
}

// TestDeployRunsAPlanWhoseShadowGateItRan: a rollout start of a plan with
// a shadow gate is refused unless it skips the gate; a deploy runs the
// gate (here its own, in place of the plan's) before the rollout, and
// then starts the plan's rollout.
func TestDeployRunsAPlanWhoseShadowGateItRan(t *testing.T) {
	f := newFixture(t)
	l := f.startLoad()
	req := shadowGate("slot", "version")
	req.Shadow.Duration, req.Shadow.MinRequests = "3s", 5
	req.Strategy, req.Plan = "rollout", "shadowed"
	p, err := f.runner.Deploy(req)
	if err != nil {
		t.Fatal(err)
	}
	p = f.wait(p.ID)
	got := l.end()
	if p.State == "failed" {
		t.Fatalf("deploy failed at %s: %s", p.FailedStep, p.Error)
	}
	if s := stepOf(t, p, "shadow"); s.Result != "ok" {
		t.Errorf("shadow step %+v, want passed", s)
	}
	if got.failed != 0 {
		t.Errorf("prod failed %d requests: %v", got.failed, got.errs)
	}
	if st := f.ctrl.Status(); st.Active != "green" {
		t.Errorf("active %s: want green after the plan's rollout", st.Active)
	}
}

// TestAShadowGateStopsOnlyItsOwnShadow: the operator ends a deploy's
// shadow and starts one of their own to the same slot; the gate fails
// ("ended before its time") and leaves the operator's shadow running.
func TestAShadowGateStopsOnlyItsOwnShadow(t *testing.T) {
	f := newFixture(t)
	l := f.startLoad()
	defer l.end()
	req := shadowGate("slot", "version")
	req.Shadow.Duration = "1m"
	p, err := f.runner.Deploy(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var gate *wire.Shadow
	vstest.WaitFor(t, time.Minute, func() error {
		if gate = f.ctrl.Shadow(); gate == nil {
			return fmt.Errorf("the deploy's shadow has not started")
		}
		return nil
	})
	if _, err := f.ctrl.StopShadow(ctx, wire.ChangeRequest{Actor: "ops"}); err != nil {
		t.Fatal(err)
	}
	var mine *wire.Shadow
	vstest.WaitFor(t, 10*time.Second, func() error { // a start told apart from the gate's
		if _, err := f.ctrl.StartShadow(ctx, wire.ShadowRequest{To: "green", Percent: 10, ChangeRequest: wire.ChangeRequest{Actor: "ops"}}); err != nil {
			return err
		}
		if mine = f.ctrl.Shadow(); mine.Started.Equal(gate.Started) {
			f.ctrl.StopShadow(ctx, wire.ChangeRequest{Actor: "ops"})
			return fmt.Errorf("started at the same instant as the gate's")
		}
		return nil
	})
	p = f.wait(p.ID)
	if p.State != "failed" || p.FailedStep != "shadow" {
		t.Fatalf("deploy %s at %q (%s): want failed at shadow", p.State, p.FailedStep, p.Error)
	}
	if sh := f.ctrl.Shadow(); sh == nil || !sh.Started.Equal(mine.Started) {
		t.Fatalf("shadow %+v after the failed gate: want the operator's, started %s, still running", sh, mine.Started)
	}
}
