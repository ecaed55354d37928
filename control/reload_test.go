package control_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// fixtureHealth is newFixture's probe settings, for reloads that keep them.
// probeTimeout is the probes' timeout in these tests: it only ends a probe
// that hangs, for with fall 1 one slow answer on a busy machine would
// mark a healthy instance down.
const probeTimeout = 10 * time.Second

var fixtureHealth = health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1}

// reloadTo is a reload to blue and green with these instances.
func reloadTo(blue, green []string, req wire.ChangeRequest) control.Reload {
	return control.Reload{
		Slots:  []control.Slot{{Name: "blue", Addrs: blue}, {Name: "green", Addrs: green}},
		Health: fixtureHealth, Request: req,
	}
}

// addrsOf returns slot's instance addresses in f's status.
func addrsOf(f *fixture, slot string) []string {
	var out []string
	for _, s := range f.ctrl.Status().Slots {
		if s.Name == slot {
			for _, i := range s.Instances {
				out = append(out, i.Addr)
			}
		}
	}
	return out
}

// lastReload returns the newest history entry, which must be a reload.
func lastReload(t *testing.T, f *fixture) wire.HistoryEntry {
	t.Helper()
	h, err := f.ctrl.History(context.Background(), 0, 1)
	if err != nil || len(h) != 1 || h[0].Operation != "reload" {
		t.Fatalf("newest history entry: %+v, %v; want a reload", h, err)
	}
	return h[0]
}

// refusedReload asserts that r is refused with a 409 naming want, in a
// dry run and for real, recorded in the history, and that nothing
// changed.
func refusedReload(t *testing.T, f *fixture, r control.Reload, want string) {
	t.Helper()
	ctx := context.Background()
	before := f.ctrl.Status()
	tables := len(f.plane.history())
	dry := r
	dry.Request.DryRun = true
	res, err := f.ctrl.Reload(ctx, dry)
	if err != nil || !strings.Contains(res.Refused, want) {
		t.Fatalf("dry run: %+v, %v; want it refused naming %q", res, err, want)
	}
	res, err = f.ctrl.Reload(ctx, r)
	var apiErr *control.Error
	if !errors.As(err, &apiErr) || apiErr.Kind != control.Conflict || !strings.Contains(err.Error(), want) || res.Applied {
		t.Fatalf("reload: %+v, %v; want a 409 naming %q", res, err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("refusal %q is not one line", err)
	}
	if e := lastReload(t, f); e.Result != "refused" || !strings.Contains(e.Error, want) {
		t.Fatalf("history: %+v; want the reload refused naming %q", e, want)
	}
	after := f.ctrl.Status()
	if after.Revision != before.Revision {
		t.Fatalf("revision %d -> %d after a refused reload", before.Revision, after.Revision)
	}
	for _, slot := range []string{"blue", "green"} {
		var b, a []string
		for _, s := range before.Slots {
			if s.Name == slot {
				for _, i := range s.Instances {
					b = append(b, i.Addr)
				}
			}
		}
		if a = addrsOf(f, slot); !slices.Equal(a, b) {
			t.Fatalf("a refused reload changed %s from %v to %v", slot, b, a)
		}
	}
	// A health change may publish a table meanwhile (a busy machine's
	// probe times out); none may route differently.
	h := f.plane.history()
	for _, tb := range h[tables:] {
		if got, want := routing(tb), routing(h[tables-1]); got != want {
			t.Fatalf("a refused reload published a table routing %s; before: %s", got, want)
		}
	}
}

// routing describes what a table routes where: its members, prod's
// weights and its routes (not the instances' health).
func routing(tb *route.Table) string {
	var members []string
	for slot, i := range tb.Members {
		members = append(members, slot+"="+i.Addr)
	}
	slices.Sort(members)
	return fmt.Sprint(members, tb.Weights(route.Prod), tb.Routes())
}

// TestReloadKeepsProdRoutable: a reload that takes every routable
// instance from the active slot (a typo in a port, or new addresses not
// yet probed) is refused with a 409 unless forced; forced, it is applied
// and recorded as forced.
func TestReloadKeepsProdRoutable(t *testing.T) {
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	f := newFixture(t, []string{blue}, []string{green})
	f.waitHealthy(t, "blue", 1)
	f.waitHealthy(t, "green", 1)

	refusedReload(t, f, reloadTo([]string{"127.0.0.1:1"}, []string{green}, wire.ChangeRequest{}), "slots.blue")
	// New addresses that do answer are not routable before a probe
	// passes: replacing all at once would leave prod without an instance.
	refusedReload(t, f, reloadTo([]string{slotServer(t, "blue")}, []string{green}, wire.ChangeRequest{}), "slots.blue")

	// Adding first, then removing the old one once the new is healthy,
	// goes through.
	next := slotServer(t, "blue")
	if _, err := f.ctrl.Reload(context.Background(), reloadTo([]string{blue, next}, []string{green}, wire.ChangeRequest{})); err != nil {
		t.Fatal(err)
	}
	f.waitHealthy(t, "blue", 2)
	if _, err := f.ctrl.Reload(context.Background(), reloadTo([]string{next}, []string{green}, wire.ChangeRequest{})); err != nil {
		t.Fatalf("reload that keeps a healthy instance: %v", err)
	}

	// Forced, the reload that empties prod applies, and says so.
	res, err := f.ctrl.Reload(context.Background(), reloadTo([]string{"127.0.0.1:1"}, []string{green}, wire.ChangeRequest{Force: true}))
	if err != nil || !res.Applied || !res.Forced {
		t.Fatalf("forced reload: %+v, %v; want applied and forced", res, err)
	}
	if e := lastReload(t, f); e.Result != "applied" || !e.Forced {
		t.Fatalf("history: %+v; want the reload applied and forced", e)
	}
	if got := addrsOf(f, "blue"); !slices.Equal(got, []string{"127.0.0.1:1"}) {
		t.Fatalf("blue is %v after the forced reload", got)
	}
}

// TestReloadMayEmptyStage: the stage slot, which takes no prod traffic,
// may lose every instance: a warning, not a refusal.
func TestReloadMayEmptyStage(t *testing.T) {
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	f := newFixture(t, []string{blue}, []string{green})
	f.waitHealthy(t, "green", 1)
	res, err := f.ctrl.Reload(context.Background(), reloadTo([]string{blue}, []string{"127.0.0.1:1"}, wire.ChangeRequest{}))
	if err != nil || !res.Applied || res.Forced {
		t.Fatalf("reload emptying stage: %+v, %v; want applied", res, err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "slots.green") {
		t.Fatalf("warnings %q; want one naming slots.green", res.Warnings)
	}
}

// TestReloadKeepsProdSharesRoutable: during a shift, a slot with a share
// of prod may not lose its routable instances either.
func TestReloadKeepsProdSharesRoutable(t *testing.T) {
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	f := newFixture(t, []string{blue}, []string{green})
	f.waitHealthy(t, "green", 1)
	if _, err := f.ctrl.Shift(context.Background(), "green", 100, wire.ChangeRequest{}); err != nil {
		t.Fatal(err)
	}
	refusedReload(t, f, reloadTo([]string{blue}, []string{"127.0.0.1:1"}, wire.ChangeRequest{}), "slots.green")
}

// TestReloadKeepsRoutedSlotsRoutable: a slot a route sends prod requests
// to may not lose its routable instances, and a reload may not add a
// route to a slot that has none.
func TestReloadKeepsRoutedSlotsRoutable(t *testing.T) {
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	f := newFixture(t, []string{blue}, []string{green})
	f.waitHealthy(t, "green", 1)
	routes := []route.Route{{PathPrefix: "/v2/", Slot: "green"}}
	r := reloadTo([]string{blue}, []string{green}, wire.ChangeRequest{})
	r.Routes = routes
	if _, err := f.ctrl.Reload(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	r = reloadTo([]string{blue}, []string{"127.0.0.1:1"}, wire.ChangeRequest{})
	r.Routes = routes
	refusedReload(t, f, r, "slots.green")

	// Without the route, green is stage only: it may lose its instances;
	// then a route to it is refused.
	if _, err := f.ctrl.Reload(context.Background(), reloadTo([]string{blue}, []string{"127.0.0.1:1"}, wire.ChangeRequest{})); err != nil {
		t.Fatal(err)
	}
	vstest.WaitFor(t, 5*time.Second, func() error { // its first failed probe publishes a table
		for _, s := range f.ctrl.Status().Slots {
			if s.Name == "green" && len(s.Instances) == 1 && s.Instances[0].Check != nil {
				return nil
			}
		}
		return errors.New("green's new instance has not been probed")
	})
	r = reloadTo([]string{blue}, []string{"127.0.0.1:1"}, wire.ChangeRequest{})
	r.Routes = routes
	refusedReload(t, f, r, "slots.green")
}

// TestReloadMayRepairAnEmptyProd: when prod's slot has no routable
// instance already, a reload that gives it new ones is what repairs it:
// it is not refused.
func TestReloadMayRepairAnEmptyProd(t *testing.T) {
	green := slotServer(t, "green")
	f := newFixture(t, []string{"127.0.0.1:1"}, []string{green})
	f.waitHealthy(t, "green", 1)
	blue := slotServer(t, "blue")
	if res, err := f.ctrl.Reload(context.Background(), reloadTo([]string{blue}, []string{green}, wire.ChangeRequest{})); err != nil || !res.Applied {
		t.Fatalf("repairing reload: %+v, %v; want applied", res, err)
	}
	f.waitHealthy(t, "blue", 1)
}

// TestReloadTriesNewProbes: new health settings are tried on the
// instances of the slots that take prod traffic before they apply: a
// health.path every instance fails (a typo) is refused unless forced;
// one they pass applies.
func TestReloadTriesNewProbes(t *testing.T) {
	blue, green := slotServer(t, "blue"), slotServer(t, "green")
	f := newFixture(t, []string{blue}, []string{green})
	f.waitHealthy(t, "blue", 1)
	f.waitHealthy(t, "green", 1)
	typo := reloadTo([]string{blue}, []string{green}, wire.ChangeRequest{})
	typo.Health.Path = "/api/ping?slot=typo"
	refusedReload(t, f, typo, "none of its instances passes the new health check")
	good := reloadTo([]string{blue}, []string{green}, wire.ChangeRequest{})
	good.Health.Path = "/api/ping?slot={slot}&v=2"
	if res, err := f.ctrl.Reload(context.Background(), good); err != nil || !res.Applied {
		t.Fatalf("a reload to a probe the instances pass: %+v, %v", res, err)
	}
	typo.Request.Force = true
	if res, err := f.ctrl.Reload(context.Background(), typo); err != nil || !res.Forced {
		t.Fatalf("the forced typo: %+v, %v; want it applied and forced", res, err)
	}
}
