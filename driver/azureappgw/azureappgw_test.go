package azureappgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/driver/azure/armstandin"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/internal/azuretest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

func TestMain(m *testing.M) { vstest.Main(m) }

const (
	rg     = "frontend-rg"
	gwName = "bluegreen-appgw"
)

var pools = map[string]string{"blue": "pool-blue", "green": "pool-green"}

type rig struct {
	arm  *armstandin.Server
	vip  *armstandin.VIP
	d    *Driver
	down map[string]bool // backend addresses the gateway says are Down
}

// rulePool returns the pool rule sends to, by name.
func rulePool(s *armstandin.Server, rule string) string {
	gw := s.Get(armstandin.AppGWPath(rg, gwName))
	for _, r := range armstandin.List(armstandin.Obj(gw["properties"])["requestRoutingRules"]) {
		if armstandin.Str(r["name"]) == rule {
			id := armstandin.Str(armstandin.Obj(armstandin.Obj(r["properties"])["backendAddressPool"])["id"])
			return id[strings.LastIndex(id, "/")+1:]
		}
	}
	return ""
}

func newRig(t *testing.T, withVIP bool) *rig {
	t.Helper()
	arm := armstandin.New()
	t.Cleanup(arm.Close)
	arm.Validate("applicationGateways", armstandin.AppGatewayRules)
	arm.Put(armstandin.AppGWPath(rg, gwName), armstandin.AppGateway(rg, gwName,
		map[string][]string{"pool-blue": {"10.1.0.4", "10.1.0.5"}, "pool-green": {"10.2.0.4"}},
		map[string]string{"rule-prod": "pool-blue", "rule-stage": "pool-green"}))
	r := &rig{arm: arm, down: map[string]bool{}}
	arm.Action("backendhealth", func(s *armstandin.Server, path string) (any, error) {
		gw := s.Get(path)
		var out []any
		for _, p := range armstandin.List(armstandin.Obj(gw["properties"])["backendAddressPools"]) {
			var servers []any
			for _, a := range armstandin.List(armstandin.Obj(p["properties"])["backendAddresses"]) {
				h := "Up"
				if r.down[armstandin.Str(a["ipAddress"])] {
					h = "Down"
				}
				servers = append(servers, map[string]any{"address": a["ipAddress"], "health": h})
			}
			out = append(out, map[string]any{
				"backendAddressPool":            map[string]any{"id": p["id"]},
				"backendHttpSettingsCollection": []any{map[string]any{"backendHttpSettings": map[string]any{"id": path + "/backendHttpSettingsCollection/http"}, "servers": servers}},
			})
		}
		return map[string]any{"backendAddressPools": out}, nil
	})
	o := Options{
		Conn: azuretest.Conn(arm, rg),
		Name: gwName, ProdRule: "rule-prod", StageRule: "rule-stage", Pools: pools, HealthEvery: time.Hour,
	}
	if withVIP {
		r.vip = azuretest.StartVIP(t, arm, 500*time.Millisecond, func(s *armstandin.Server) map[string]int {
			for slot, pool := range pools {
				if rulePool(s, "rule-prod") == pool {
					return map[string]int{slot: 1}
				}
			}
			return nil
		})
		o.Confirm = azure.Confirm{URL: r.vip.URL + "/api/test", Window: 5, Every: 20 * time.Millisecond, Deadline: 30 * time.Second}
	}
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	t.Cleanup(d.Close)
	return r
}

func table(rev uint64, prod, stage string) *route.Table {
	return route.Build(route.Spec{Revision: rev, Listeners: [2][]route.Weighted{
		route.Prod: {{Slot: prod, Weight: 1000}}, route.Stage: {{Slot: stage, Weight: 1000}},
	}})
}

// withoutRulePools removes the rules' pools and what ARM keeps itself.
func withoutRulePools(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "etag")
	props := armstandin.Obj(m["properties"])
	delete(props, "provisioningState")
	for _, r := range armstandin.List(props["requestRoutingRules"]) {
		delete(armstandin.Obj(r["properties"]), "backendAddressPool")
	}
	return m
}

func TestSwap(t *testing.T) {
	r := newRig(t, true)
	before := r.arm.Get(armstandin.AppGWPath(rg, gwName))
	r.arm.Fault(armstandin.Faults{Throttle: 1, OpPolls: 2})
	if err := r.d.Apply(table(2, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	if p, s := rulePool(r.arm, "rule-prod"), rulePool(r.arm, "rule-stage"); p != "pool-green" || s != "pool-blue" {
		t.Fatalf("rules send prod to %s and stage to %s, want pool-green and pool-blue", p, s)
	}
	writes := r.arm.Writes()
	if len(writes) != 1 || writes[0].IfMatch != armstandin.Str(before["etag"]) {
		t.Fatalf("writes %d (If-Match %q), want one PUT under the ETag read", len(writes), writes[0].IfMatch)
	}
	orig, _ := json.Marshal(before)
	if a, b := withoutRulePools(t, orig), withoutRulePools(t, writes[0].Body); !reflect.DeepEqual(a, b) {
		t.Fatalf("the PUT changed more than the rules' pools:\nbefore %v\nsent   %v", a, b)
	}
	ps := r.d.PlaneStatus()
	if !ps.Applied || ps.ConvergedSeconds < 0.5 {
		t.Fatalf("status %+v: want applied, converged no sooner than the VIP's 500 ms", ps)
	}
	t.Logf("converged in %.3fs through the stand-in (API with one 429 and 2 polls, then the VIP's 500 ms)", ps.ConvergedSeconds)
}

func TestStaleETagDrift(t *testing.T) {
	r := newRig(t, false)
	r.arm.Fault(armstandin.Faults{BeforePut: func() {
		r.arm.Mutate(armstandin.AppGWPath(rg, gwName), func(gw armstandin.Resource) {
			for _, rule := range armstandin.List(armstandin.Obj(gw["properties"])["requestRoutingRules"]) {
				if armstandin.Str(rule["name"]) == "rule-stage" {
					armstandin.Obj(rule["properties"])["backendAddressPool"] = map[string]any{"id": armstandin.AppGWPath(rg, gwName) + "/backendAddressPools/pool-blue"}
				}
			}
		})
	}})
	err := r.d.Apply(table(2, "green", "blue"))
	var drift *azure.DriftError
	if !errors.As(err, &drift) {
		t.Fatalf("apply: %v, want drift", err)
	}
	if p, s := rulePool(r.arm, "rule-prod"), rulePool(r.arm, "rule-stage"); p != "pool-blue" || s != "pool-blue" {
		t.Fatalf("the hand change was overwritten: prod %s, stage %s", p, s)
	}
}

func TestStaleETagSameStateIsRetried(t *testing.T) {
	r := newRig(t, false)
	r.arm.Fault(armstandin.Faults{BeforePut: func() {
		r.arm.Mutate(armstandin.AppGWPath(rg, gwName), func(gw armstandin.Resource) { gw["tags"] = map[string]any{"owner": "ops"} })
	}})
	if err := r.d.Apply(table(2, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	if p := rulePool(r.arm, "rule-prod"); p != "pool-green" {
		t.Fatalf("prod rule sends to %s", p)
	}
	if n := len(r.arm.Writes()); n != 2 {
		t.Fatalf("%d writes, want 2 (412, then the retry)", n)
	}
}

func TestBackendHealth(t *testing.T) {
	r := newRig(t, false)
	r.down["10.1.0.5"] = true
	up := r.d.Probe(context.Background(), health.Target{Slot: "blue", Addr: "10.1.0.4:80"})
	down := r.d.Probe(context.Background(), health.Target{Slot: "blue", Addr: "10.1.0.5:80"})
	missing := r.d.Probe(context.Background(), health.Target{Slot: "green", Addr: "10.9.9.9:80"})
	if !up.OK() || down.OK() || missing.OK() {
		t.Fatalf("probes: up %+v, down %+v, missing %+v", up, down, missing)
	}
	if v := r.d.View("blue", "10.1.0.5:80"); v != "Down" {
		t.Fatalf("view %q, want Down", v)
	}
	// Read once (HealthEvery is an hour): one POST of backendhealth.
	posts := 0
	for _, q := range r.arm.Requests() {
		if q.Method == "POST" {
			posts++
		}
	}
	if posts != 1 {
		t.Fatalf("%d backendhealth operations, want 1", posts)
	}
}

func TestDryRun(t *testing.T) {
	r := newRig(t, false)
	lines, err := r.d.Plan(context.Background(), []route.Weighted{{Slot: "green", Weight: 1000}}, []route.Weighted{{Slot: "blue", Weight: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`application gateway bluegreen-appgw: requestRoutingRules[rule-prod].backendAddressPool "pool-blue" -> "pool-green"` +
			"\n    az network application-gateway rule update -g frontend-rg --gateway-name bluegreen-appgw -n rule-prod --address-pool pool-green",
		`application gateway bluegreen-appgw: requestRoutingRules[rule-stage].backendAddressPool "pool-green" -> "pool-blue"` +
			"\n    az network application-gateway rule update -g frontend-rg --gateway-name bluegreen-appgw -n rule-stage --address-pool pool-blue",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Fatalf("dry run:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("the dry run wrote %d times", n)
	}
}

// A pool the gateway does not have is refused by Ready, before any write.
func TestReadyNamesAMissingPool(t *testing.T) {
	r := newRig(t, false)
	r.d.o.Pools = map[string]string{"blue": "pool-blue", "green": "pool-gren"}
	err := r.d.Ready(context.Background(), []string{"blue", "green"})
	if err == nil || !strings.Contains(err.Error(), "pool-gren") {
		t.Fatalf("ready: %v", err)
	}
}

// Broken answers, operations that never end and failing credentials
// each fail the apply in one line and leave the gateway as it was.
func TestHostileAnswers(t *testing.T) {
	for name, tc := range map[string]struct {
		faults armstandin.Faults
		cred   error
		want   string
	}{
		"garbage":     {faults: armstandin.Faults{Garbage: 1}, want: "reading application gateway"},
		"never ends":  {faults: armstandin.Faults{OpPolls: -1}, want: "did not finish in time"},
		"credentials": {cred: errors.New("ManagedIdentityCredential: no response\nmore\nlines"), want: "azure credentials"},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, false)
			r.d.o.Conn.OperationTimeout = 2 * time.Second
			if tc.cred != nil {
				o := r.d.o
				o.Conn.Credential = armstandin.Credential{Err: tc.cred}
				d, err := New(o)
				if err != nil {
					t.Fatal(err)
				}
				r.d = d
			}
			r.arm.Fault(tc.faults)
			err := r.d.Apply(table(2, "green", "blue"))
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("apply: %q, want one line with %q", err, tc.want)
			}
			if name != "never ends" {
				if p := rulePool(r.arm, "rule-prod"); p != "pool-blue" {
					t.Fatalf("the gateway changed: prod rule -> %s", p)
				}
			}
		})
	}
}

// The backend health takes Azure seconds to a minute: a probe never
// waits past its own deadline for it, and the reading carries on in the
// background until it lands.
func TestBackendHealthOutlivesAProbe(t *testing.T) {
	r := newRig(t, false)
	r.arm.Fault(armstandin.Faults{OpPolls: 3}) // three polls of a second each
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	ck := r.d.Probe(ctx, health.Target{Slot: "blue", Addr: "10.1.0.4:80"})
	cancel()
	if ck.OK() || !strings.Contains(ck.Detail, "being read") {
		t.Fatalf("a probe during the first reading: %+v", ck)
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if ck := r.d.Probe(ctx, health.Target{Slot: "blue", Addr: "10.1.0.4:80"}); !ck.OK() {
			return fmt.Errorf("probe %+v", ck)
		}
		return nil
	})
}

// A rule sending to a pool of no slot (a maintenance pool set by hand
// while vipswap was not running) is drift on the first apply too:
// nothing is overwritten.
func TestUnknownPoolIsDriftOnFirstApply(t *testing.T) {
	r := newRig(t, false)
	r.arm.Mutate(armstandin.AppGWPath(rg, gwName), func(gw armstandin.Resource) {
		props := armstandin.Obj(gw["properties"])
		id := armstandin.AppGWPath(rg, gwName) + "/backendAddressPools/pool-maint"
		props["backendAddressPools"] = append(props["backendAddressPools"].([]any), map[string]any{"name": "pool-maint", "id": id, "properties": map[string]any{}})
		for _, rule := range armstandin.List(props["requestRoutingRules"]) {
			if armstandin.Str(rule["name"]) == "rule-prod" {
				armstandin.Obj(rule["properties"])["backendAddressPool"] = map[string]any{"id": id}
			}
		}
	})
	err := r.d.Apply(table(2, "green", "blue"))
	var drift *azure.DriftError
	if !errors.As(err, &drift) || !strings.Contains(err.Error(), "pool-maint") {
		t.Fatalf("apply over a pool of no slot: %v, want drift naming it", err)
	}
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("%d writes over a state vipswap does not know", n)
	}
	if p := rulePool(r.arm, "rule-prod"); p != "pool-maint" {
		t.Fatalf("the hand change was overwritten: prod %s", p)
	}
}
