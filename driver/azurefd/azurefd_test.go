package azurefd

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/driver/azure/armstandin"
	"github.com/vipswap/vipswap/internal/azuretest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

func TestMain(m *testing.M) { vstest.Main(m) }

const (
	rg      = "alwayson-global-rg"
	profile = "alwayson-fd"
	group   = "backends-api"
)

var origins = map[string][]string{"blue": {"unit-2021-7-1"}, "green": {"unit-2021-7-2"}}

type rig struct {
	arm *armstandin.Server
	vip *armstandin.VIP
	d   *Driver
}

// split is what Front Door routes by: each slot's enabled origins'
// weights.
func split(s *armstandin.Server) map[string]int {
	out := map[string]int{}
	for slot, names := range origins {
		for _, n := range names {
			p := armstandin.Obj(s.Get(armstandin.OriginPath(rg, profile, group, n))["properties"])
			if p["enabledState"] == "Enabled" {
				w, _ := armstandin.Num(p["weight"])
				out[slot] += int(w)
			}
		}
	}
	return out
}

func newRig(t *testing.T, withVIP bool) *rig {
	t.Helper()
	arm := armstandin.New()
	t.Cleanup(arm.Close)
	arm.Validate("origins", armstandin.AFDOriginRules)
	arm.Put(armstandin.OriginPath(rg, profile, group, "unit-2021-7-1"), armstandin.Origin("unit-2021-7-1", "unit1.example.net", 1000, true))
	arm.Put(armstandin.OriginPath(rg, profile, group, "unit-2021-7-2"), armstandin.Origin("unit-2021-7-2", "unit2.example.net", 1000, false))
	r := &rig{arm: arm}
	o := Options{
		Conn:    azuretest.Conn(arm, rg),
		Profile: profile, OriginGroup: group, Origins: origins,
	}
	if withVIP {
		r.vip = azuretest.StartVIP(t, arm, 200*time.Millisecond, split)
		o.Confirm = azure.Confirm{URL: r.vip.URL + "/api/test", Window: 5, Every: 10 * time.Millisecond, Deadline: 30 * time.Second}
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	t.Cleanup(d.Close)
	return r
}

func prod(rev uint64, ws ...route.Weighted) *route.Table {
	return route.Build(route.Spec{Revision: rev, Listeners: [2][]route.Weighted{route.Prod: ws, route.Stage: {{Slot: "green", Weight: 1000}}}})
}

// patches returns the PATCH bodies sent, by origin name, in order.
func patches(t *testing.T, arm *armstandin.Server) (names []string, bodies []map[string]any) {
	t.Helper()
	for _, w := range arm.Writes() {
		if w.Method != "PATCH" {
			t.Fatalf("a %s to Front Door; origins are changed with PATCH", w.Method)
		}
		var b map[string]any
		if err := json.Unmarshal(w.Body, &b); err != nil {
			t.Fatal(err)
		}
		names = append(names, w.Path[strings.LastIndex(w.Path, "/")+1:])
		bodies = append(bodies, b)
	}
	return names, bodies
}

func TestShiftThenAbort(t *testing.T) {
	r := newRig(t, true)
	r.arm.Fault(armstandin.Faults{Throttle: 1, OpPolls: 2})
	// 10 % to green: green's origin enabled at weight 100 first, then
	// blue's lowered to 900.
	if err := r.d.Apply(prod(2, route.Weighted{Slot: "blue", Weight: 900}, route.Weighted{Slot: "green", Weight: 100})); err != nil {
		t.Fatal(err)
	}
	if got, want := split(r.arm), map[string]int{"blue": 900, "green": 100}; !reflect.DeepEqual(got, want) {
		t.Fatalf("front door splits %v, want %v", got, want)
	}
	names, bodies := patches(t, r.arm)
	if !reflect.DeepEqual(names, []string{"unit-2021-7-2", "unit-2021-7-1"}) {
		t.Fatalf("origins updated in the order %v, want green's (gaining) first", names)
	}
	for _, b := range bodies {
		p := armstandin.Obj(b["properties"])
		if len(b) != 1 || len(p) != 2 || p["weight"] == nil || p["enabledState"] == nil {
			t.Fatalf("a PATCH sent %v: want properties.weight and properties.enabledState only", b)
		}
	}
	ps := r.d.PlaneStatus()
	if !ps.Applied || ps.ConvergedSeconds < 0.2 {
		t.Fatalf("status %+v: want applied, converged no sooner than the VIP's 200 ms", ps)
	}
	t.Logf("shift to 10 %% converged in %.3fs through the stand-in", ps.ConvergedSeconds)

	// Abort: all of prod back to blue, green's origin disabled.
	if err := r.d.Apply(prod(3, route.Weighted{Slot: "blue", Weight: 1000})); err != nil {
		t.Fatal(err)
	}
	if got, want := split(r.arm), map[string]int{"blue": 1000}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after the abort front door splits %v, want %v", got, want)
	}
	names, _ = patches(t, r.arm)
	if !reflect.DeepEqual(names[2:], []string{"unit-2021-7-1", "unit-2021-7-2"}) {
		t.Fatalf("abort updated %v, want blue's raised before green's disabled", names[2:])
	}
	t.Logf("abort converged in %.3fs through the stand-in", r.d.PlaneStatus().ConvergedSeconds)
}

func TestDriftIsReported(t *testing.T) {
	r := newRig(t, false)
	if err := r.d.Apply(prod(2, route.Weighted{Slot: "blue", Weight: 500}, route.Weighted{Slot: "green", Weight: 500})); err != nil {
		t.Fatal(err)
	}
	r.arm.Mutate(armstandin.OriginPath(rg, profile, group, "unit-2021-7-2"), func(o armstandin.Resource) {
		armstandin.Obj(o["properties"])["weight"] = 1000.0
	})
	n := len(r.arm.Writes())
	err := r.d.Apply(prod(3, route.Weighted{Slot: "blue", Weight: 1000}))
	var drift *azure.DriftError
	if !errors.As(err, &drift) {
		t.Fatalf("apply after a hand change: %v, want drift", err)
	}
	if len(r.arm.Writes()) != n {
		t.Fatal("the drifted origins were written")
	}
	if w, _ := armstandin.Num(armstandin.Obj(r.arm.Get(armstandin.OriginPath(rg, profile, group, "unit-2021-7-2"))["properties"])["weight"]); w != 1000 {
		t.Fatalf("the hand change was overwritten: weight %v", w)
	}
}

func TestDryRun(t *testing.T) {
	r := newRig(t, false)
	lines, err := r.d.Plan(context.Background(), []route.Weighted{{Slot: "blue", Weight: 750}, {Slot: "green", Weight: 250}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`front door origin alwayson-fd/backends-api/unit-2021-7-2 (slot green): weight, enabledState "weight 1000, Disabled" -> "weight 250, Enabled"` +
			"\n    az afd origin update -g alwayson-global-rg --profile-name alwayson-fd --origin-group-name backends-api --origin-name unit-2021-7-2 --weight 250 --enabled-state Enabled",
		`front door origin alwayson-fd/backends-api/unit-2021-7-1 (slot blue): weight, enabledState "weight 1000, Enabled" -> "weight 750, Enabled"` +
			"\n    az afd origin update -g alwayson-global-rg --profile-name alwayson-fd --origin-group-name backends-api --origin-name unit-2021-7-1 --weight 750",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Fatalf("dry run:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("the dry run wrote %d times", n)
	}
}

func TestNeverFinishingOperation(t *testing.T) {
	r := newRig(t, false)
	r.d.o.Conn.OperationTimeout = 2 * time.Second
	r.arm.Fault(armstandin.Faults{OpPolls: -1})
	err := r.d.Apply(prod(2, route.Weighted{Slot: "green", Weight: 1000}))
	if err == nil || !strings.Contains(err.Error(), "did not finish in time") {
		t.Fatalf("apply of a never-ending operation: %v", err)
	}
}

// Broken answers and failing credentials fail the apply in one line and
// change no origin.
func TestHostileAnswers(t *testing.T) {
	for name, tc := range map[string]struct {
		faults armstandin.Faults
		cred   error
		want   string
	}{
		"garbage":     {faults: armstandin.Faults{Garbage: 1}, want: "reading front door origin"},
		"credentials": {cred: errors.New("AzureCLICredential: az not found\nmore"), want: "azure credentials"},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, false)
			if tc.cred != nil {
				o := r.d.o
				o.Conn.Credential = armstandin.Credential{Err: tc.cred}
				d, err := New(o)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(d.Close)
				r.d = d
			}
			r.arm.Fault(tc.faults)
			err := r.d.Apply(prod(2, route.Weighted{Slot: "green", Weight: 1000}))
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("apply: %q, want one line with %q", err, tc.want)
			}
			if n := len(r.arm.Writes()); n != 0 {
				t.Fatalf("%d writes", n)
			}
		})
	}
}

// A shift the endpoint did not show within the deadline is asked again on
// the next apply of the same split (the retry, a health transition's
// table), not taken as done because the origins already show it.
func TestUnconfirmedShiftIsAskedAgain(t *testing.T) {
	r := newRig(t, true)
	r.vip.Freeze()
	r.d.o.Confirm.Deadline = 500 * time.Millisecond
	split := []route.Weighted{{Slot: "blue", Weight: 900}, {Slot: "green", Weight: 100}}
	var nc *azure.NotConvergedError
	if err := r.d.Apply(prod(2, split...)); !errors.As(err, &nc) {
		t.Fatalf("a shift the endpoint never shows: %v, want not converged", err)
	}
	if err := r.d.Apply(prod(3, split...)); !errors.As(err, &nc) {
		t.Fatalf("the next apply of the unconfirmed split: %v, want it still not converged", err)
	}
	if ps := r.d.PlaneStatus(); ps.Applied {
		t.Fatalf("status says applied while the endpoint never showed the split: %+v", ps)
	}
}

// An origin update not seen to finish may have taken: the next apply
// finds that origin changed and goes on, rather than calling vipswap's
// own write drift.
func TestUpdateNotSeenToFinishIsNotDrift(t *testing.T) {
	r := newRig(t, false)
	if err := r.d.Apply(prod(2, route.Weighted{Slot: "blue", Weight: 1000})); err != nil {
		t.Fatal(err)
	}
	r.d.o.Conn.OperationTimeout = 2 * time.Second
	r.arm.Fault(armstandin.Faults{OpPolls: -1})
	shift := []route.Weighted{{Slot: "blue", Weight: 900}, {Slot: "green", Weight: 100}}
	if err := r.d.Apply(prod(3, shift...)); err == nil || !strings.Contains(err.Error(), "did not finish in time") {
		t.Fatalf("a shift whose operation never ends: %v", err)
	}
	r.arm.Fault(armstandin.Faults{})
	r.d.o.Conn.OperationTimeout = 30 * time.Second
	if err := r.d.Apply(prod(3, shift...)); err != nil {
		t.Fatalf("the retry after an update not seen to finish: %v", err)
	}
	if got, want := split(r.arm), map[string]int{"blue": 900, "green": 100}; !reflect.DeepEqual(got, want) {
		t.Fatalf("front door splits %v, want %v", got, want)
	}
}
