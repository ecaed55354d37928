package azurelb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
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
	rg     = "vmsstf-rg"
	lbName = "api-prod-vmss-lb"
	slot0  = "/api/ping?slot=slot0"
	slot1  = "/api/ping?slot=slot1"
)

var paths = map[string]string{"blue": slot0, "green": slot1}

// rig is a stand-in ARM serving seed 000's load balancer (blue active),
// a VIP in front of real sample apps, and a driver pointed at them.
type rig struct {
	arm *armstandin.Server
	vip *armstandin.VIP
	d   *Driver
}

// prodSlot is the slot whose instances answer the prod probe's path:
// the one the load balancer sends prod to.
func prodSlot(s *armstandin.Server) map[string]int {
	lb := s.Get(armstandin.LBPath(rg, lbName))
	for _, p := range armstandin.List(armstandin.Obj(lb["properties"])["probes"]) {
		if armstandin.Str(p["name"]) == "http-probe" {
			for slot, path := range paths {
				if armstandin.Str(armstandin.Obj(p["properties"])["requestPath"]) == path {
					return map[string]int{slot: 1}
				}
			}
		}
	}
	return nil
}

func newRig(t *testing.T, delay time.Duration, tweak func(*Options)) *rig {
	t.Helper()
	arm := armstandin.New()
	t.Cleanup(arm.Close)
	arm.Validate("loadBalancers", armstandin.LoadBalancerRules)
	arm.Put(armstandin.LBPath(rg, lbName), armstandin.LoadBalancer(rg, lbName, slot0, slot1, "0"))
	r := &rig{arm: arm}
	if delay >= 0 {
		r.vip = azuretest.StartVIP(t, arm, delay, prodSlot)
	}
	o := Options{
		Conn: azuretest.Conn(arm, rg),
		Name: lbName, ProdProbe: "http-probe", StageProbe: "http-probe-stage",
		Paths: paths, TagValues: map[string]string{"blue": "0", "green": "1"},
	}
	if r.vip != nil {
		o.Confirm = azure.Confirm{URL: r.vip.URL + "/api/test", Window: 5, Every: 20 * time.Millisecond, Deadline: 30 * time.Second}
	}
	if tweak != nil {
		tweak(&o)
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

// view reads the load balancer's probe paths and tag from the stand-in.
func (r *rig) view() view {
	lb := r.arm.Get(armstandin.LBPath(rg, lbName))
	var v view
	for _, p := range armstandin.List(armstandin.Obj(lb["properties"])["probes"]) {
		path := armstandin.Str(armstandin.Obj(p["properties"])["requestPath"])
		switch armstandin.Str(p["name"]) {
		case "http-probe":
			v.prod = path
		case "http-probe-stage":
			v.stage = path
		}
	}
	v.tag = armstandin.Str(armstandin.Obj(lb["tags"])["ActiveSlot"])
	return v
}

// withoutSwapFields removes from a load balancer's JSON what a swap may
// change (probe paths, tags) and what ARM keeps itself.
func withoutSwapFields(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "tags")
	delete(m, "etag")
	props := armstandin.Obj(m["properties"])
	delete(props, "provisioningState")
	for _, p := range armstandin.List(props["probes"]) {
		delete(armstandin.Obj(p["properties"]), "requestPath")
		delete(armstandin.Obj(p["properties"]), "provisioningState")
		delete(p, "etag")
	}
	return m
}

func TestSwapThroughThrottlingAndSlowOperation(t *testing.T) {
	r := newRig(t, 300*time.Millisecond, nil)
	before := r.arm.Get(armstandin.LBPath(rg, lbName))
	etag := armstandin.Str(before["etag"])
	r.arm.Fault(armstandin.Faults{Throttle: 1, Fail: 1, OpPolls: 3})
	if err := r.d.Apply(table(2, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	if got, want := r.view(), (view{prod: slot1, stage: slot0, tag: "1"}); got != want {
		t.Fatalf("load balancer shows %v, want %v", got, want)
	}
	writes := r.arm.Writes()
	if len(writes) != 1 {
		t.Fatalf("%d writes reached ARM past the throttling, want exactly 1 PUT", len(writes))
	}
	if writes[0].Method != "PUT" || writes[0].IfMatch != etag {
		t.Fatalf("write %s with If-Match %q, want PUT with the ETag read, %q", writes[0].Method, writes[0].IfMatch, etag)
	}
	// One PUT changed the two probe paths and the tag, and nothing else.
	orig, _ := json.Marshal(before)
	if a, b := withoutSwapFields(t, orig), withoutSwapFields(t, writes[0].Body); !reflect.DeepEqual(a, b) {
		t.Fatalf("the PUT changed more than the probe paths and the tag:\nbefore %v\nsent   %v", a, b)
	}
	ps := r.d.PlaneStatus()
	if !ps.Applied || ps.Revision != 2 {
		t.Fatalf("status %+v, want revision 2 applied", ps)
	}
	// The VIP switches 300 ms after the write: a switch measured from
	// the API's answer would be shorter.
	if ps.ConvergedSeconds < 0.3 {
		t.Fatalf("converged in %.3fs, before the VIP could show it (300 ms after the write)", ps.ConvergedSeconds)
	}
	t.Logf("converged (read, PUT, operation polled to the end, VIP answering green 5 times in a row) in %.3fs through the stand-in", ps.ConvergedSeconds)
	// Applying the same table again writes nothing.
	if err := r.d.Apply(table(3, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	if n := len(r.arm.Writes()); n != 1 {
		t.Fatalf("%d writes after a table that changes nothing, want still 1", n)
	}
}

func TestStaleETagSameStateIsRetried(t *testing.T) {
	r := newRig(t, 0, nil)
	// Someone adds a tag between vipswap's read and its write: the ETag
	// changes, what vipswap owns does not.
	r.arm.Fault(armstandin.Faults{BeforePut: func() {
		r.arm.Mutate(armstandin.LBPath(rg, lbName), func(lb armstandin.Resource) {
			armstandin.Obj(lb["tags"])["owner"] = "ops"
		})
	}})
	if err := r.d.Apply(table(2, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	writes := r.arm.Writes()
	if len(writes) != 2 {
		t.Fatalf("%d writes, want 2 (one refused 412, one after reading again)", len(writes))
	}
	if got := r.view(); got != (view{prod: slot1, stage: slot0, tag: "1"}) {
		t.Fatalf("load balancer shows %v", got)
	}
	if tags := armstandin.Obj(r.arm.Get(armstandin.LBPath(rg, lbName))["tags"]); tags["owner"] != "ops" {
		t.Fatalf("the tag added by hand was lost: %v", tags)
	}
}

func TestStaleETagDriftIsReportedNothingOverwritten(t *testing.T) {
	r := newRig(t, 0, nil)
	// Someone swaps by hand between vipswap's read and its write.
	r.arm.Fault(armstandin.Faults{BeforePut: func() {
		r.arm.Mutate(armstandin.LBPath(rg, lbName), func(lb armstandin.Resource) {
			for _, p := range armstandin.List(armstandin.Obj(lb["properties"])["probes"]) {
				if armstandin.Str(p["name"]) == "http-probe" {
					armstandin.Obj(p["properties"])["requestPath"] = "/api/ping?slot=slot7"
				}
			}
		})
	}})
	err := r.d.Apply(table(2, "green", "blue"))
	var drift *azure.DriftError
	if !errors.As(err, &drift) {
		t.Fatalf("apply: %v, want a drift error", err)
	}
	if !strings.Contains(err.Error(), "slot7") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("the drift error does not say what changed, in one line: %q", err)
	}
	if got := r.view(); got != (view{prod: "/api/ping?slot=slot7", stage: slot1, tag: "0"}) {
		t.Fatalf("the hand change was overwritten: %v", got)
	}
	if n := len(r.arm.Writes()); n != 1 {
		t.Fatalf("%d writes, want 1 (refused)", n)
	}
	if ps := r.d.PlaneStatus(); ps.Applied || !strings.Contains(ps.Error, "changed outside vipswap") {
		t.Fatalf("status %+v does not report the drift", ps)
	}
}

func TestDriftSinceLastApplyIsReported(t *testing.T) {
	r := newRig(t, 0, nil)
	if err := r.d.Apply(table(2, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	r.arm.Mutate(armstandin.LBPath(rg, lbName), func(lb armstandin.Resource) { armstandin.Obj(lb["tags"])["ActiveSlot"] = "0" })
	err := r.d.Apply(table(3, "blue", "green"))
	var drift *azure.DriftError
	if !errors.As(err, &drift) {
		t.Fatalf("apply after a hand change: %v, want drift", err)
	}
	if n := len(r.arm.Writes()); n != 1 {
		t.Fatalf("%d writes, want only the first apply's", n)
	}
}

func TestNeverFinishingOperation(t *testing.T) {
	r := newRig(t, -1, func(o *Options) { o.Conn.OperationTimeout = 2 * time.Second })
	r.arm.Fault(armstandin.Faults{OpPolls: -1})
	err := r.d.Apply(table(2, "green", "blue"))
	if err == nil || !strings.Contains(err.Error(), "did not finish in time") {
		t.Fatalf("apply of a never-ending operation: %v", err)
	}
	if ps := r.d.PlaneStatus(); ps.Applied {
		t.Fatalf("status says applied: %+v", ps)
	}
}

func TestGarbageAnswer(t *testing.T) {
	r := newRig(t, -1, nil)
	r.arm.Fault(armstandin.Faults{Garbage: 1})
	err := r.d.Apply(table(2, "green", "blue"))
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "reading load balancer") {
		t.Fatalf("apply over a broken answer: %q, want one line naming the read", err)
	}
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("%d writes after a broken read", n)
	}
	if got := r.view(); got != (view{prod: slot0, stage: slot1, tag: "0"}) {
		t.Fatalf("load balancer changed: %v", got)
	}
}

func TestNeverConvergingVIP(t *testing.T) {
	r := newRig(t, 0, func(o *Options) {})
	r.vip.Freeze()
	r.d.o.Confirm.Deadline = time.Second
	err := r.d.Apply(table(2, "green", "blue"))
	var nc *azure.NotConvergedError
	if !errors.As(err, &nc) || !strings.Contains(err.Error(), "vipswap rollback") {
		t.Fatalf("apply that never shows: %v, want not converged with the rollback offered", err)
	}
	t.Log(err)
	// The same routing again (a health transition's table): the VIP is
	// asked again, not trusted because the API already shows it.
	r.d.o.Confirm.Deadline = 300 * time.Millisecond
	if err := r.d.Apply(table(3, "green", "blue")); !errors.As(err, &nc) {
		t.Fatalf("the next apply to the unconfirmed slot: %v, want it still not converged", err)
	}
	if ps := r.d.PlaneStatus(); ps.Applied {
		t.Fatalf("status says applied while the VIP never showed it: %+v", ps)
	}
}

func TestCredentialsFailing(t *testing.T) {
	r := newRig(t, -1, func(o *Options) {
		o.Conn.Credential = armstandin.Credential{Err: errors.New("DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n\tEnvironmentCredential: missing environment variables")}
	})
	err := r.d.Apply(table(2, "green", "blue"))
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "azure credentials") {
		t.Fatalf("apply without credentials: %q, want one line naming the credentials", err)
	}
	if n := len(r.arm.Requests()); n != 0 {
		t.Fatalf("%d requests reached ARM without a token", n)
	}
}

func TestSplitIsRefused(t *testing.T) {
	r := newRig(t, -1, nil)
	tb := route.Build(route.Spec{Revision: 2, Listeners: [2][]route.Weighted{
		route.Prod: {{Slot: "blue", Weight: 900}, {Slot: "green", Weight: 100}}, route.Stage: {{Slot: "green", Weight: 1000}},
	}})
	err := r.d.Apply(tb)
	if err == nil || !strings.Contains(err.Error(), "azure_frontdoor") {
		t.Fatalf("a split on a load balancer: %v", err)
	}
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("%d writes for a refused split", n)
	}
}

// The dry run prints seed 000's swap script, command for command.
func TestDryRunMatchesTheSeedScript(t *testing.T) {
	r := newRig(t, -1, nil)
	lines, err := r.d.Plan(context.Background(), []route.Weighted{{Slot: "green", Weight: 1000}}, []route.Weighted{{Slot: "blue", Weight: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	// The seed's script with m=0, n=1.
	seed := []string{
		`az network lb probe update -g vmsstf-rg --lb-name api-prod-vmss-lb -n http-probe --set "requestPath='/api/ping?slot=slot1'"`,
		`az network lb probe update -g vmsstf-rg --lb-name api-prod-vmss-lb -n http-probe-stage --set "requestPath='/api/ping?slot=slot0'"`,
		`az network lb update -g vmsstf-rg -n api-prod-vmss-lb --set "tags.ActiveSlot=1"`,
	}
	fields := []string{
		`load balancer api-prod-vmss-lb: probes[http-probe].requestPath "/api/ping?slot=slot0" -> "/api/ping?slot=slot1"`,
		`load balancer api-prod-vmss-lb: probes[http-probe-stage].requestPath "/api/ping?slot=slot1" -> "/api/ping?slot=slot0"`,
		`load balancer api-prod-vmss-lb: tags.ActiveSlot "0" -> "1"`,
	}
	if len(lines) != len(seed) {
		t.Fatalf("dry run:\n%s\nwant %d changes", strings.Join(lines, "\n"), len(seed))
	}
	for i, l := range lines {
		if want := fields[i] + "\n    " + seed[i]; l != want {
			t.Errorf("dry run line %d:\n%s\nwant\n%s", i, l, want)
		}
	}
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("the dry run wrote %d times", n)
	}
}

// A node that does not lead writes nothing: its apply returns at once,
// and its status says applied once the leader's change shows.
func TestFollowerWritesNothing(t *testing.T) {
	r := newRig(t, -1, func(o *Options) { o.Leading = func() bool { return false } })
	t.Cleanup(r.d.Close)
	if err := r.d.Apply(table(2, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	if ps := r.d.PlaneStatus(); ps.Applied || !strings.Contains(ps.Error, "does not lead") {
		t.Fatalf("follower's status before the leader wrote: %+v", ps)
	}
	// The leader's write (by hand here).
	r.arm.Mutate(armstandin.LBPath(rg, lbName), func(lb armstandin.Resource) {
		for _, p := range armstandin.List(armstandin.Obj(lb["properties"])["probes"]) {
			pp := armstandin.Obj(p["properties"])
			if armstandin.Str(p["name"]) == "http-probe" {
				pp["requestPath"] = slot1
			} else {
				pp["requestPath"] = slot0
			}
		}
		armstandin.Obj(lb["tags"])["ActiveSlot"] = "1"
	})
	vstest.WaitFor(t, 30*time.Second, func() error {
		if ps := r.d.PlaneStatus(); !ps.Applied || ps.Revision != 2 {
			return fmt.Errorf("follower's status %+v, want revision 2 applied", ps)
		}
		return nil
	})
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("the follower wrote %d times", n)
	}
}

// A change refused for drift is applied again once the resource is put
// back as vipswap expects: the answer's "it will be retried" holds.
func TestRetriedAfterDriftIsFixed(t *testing.T) {
	r := newRig(t, -1, func(o *Options) { o.Conn.RetryEvery = 100 * time.Millisecond })
	if err := r.d.Apply(table(2, "green", "blue")); err != nil {
		t.Fatal(err)
	}
	r.arm.Mutate(armstandin.LBPath(rg, lbName), func(lb armstandin.Resource) { armstandin.Obj(lb["tags"])["ActiveSlot"] = "7" })
	var drift *azure.DriftError
	if err := r.d.Apply(table(3, "blue", "green")); !errors.As(err, &drift) {
		t.Fatalf("apply after a hand change: %v, want drift", err)
	}
	// Put right by hand: the retry applies revision 3.
	r.arm.Mutate(armstandin.LBPath(rg, lbName), func(lb armstandin.Resource) { armstandin.Obj(lb["tags"])["ActiveSlot"] = "1" })
	vstest.WaitFor(t, 30*time.Second, func() error {
		if ps := r.d.PlaneStatus(); !ps.Applied || ps.Revision != 3 {
			return fmt.Errorf("status %+v, want revision 3 applied", ps)
		}
		return nil
	})
	if got := r.view(); got != (view{prod: slot0, stage: slot1, tag: "0"}) {
		t.Fatalf("load balancer shows %v after the retry", got)
	}
}

// A load balancer whose probe asks for neither slot's path (a hand
// change while vipswap was not running, or a probe vipswap never set) is
// drift on the first apply too: nothing is overwritten.
func TestUnknownProbePathIsDriftOnFirstApply(t *testing.T) {
	r := newRig(t, -1, nil)
	r.arm.Mutate(armstandin.LBPath(rg, lbName), func(lb armstandin.Resource) {
		for _, p := range armstandin.List(armstandin.Obj(lb["properties"])["probes"]) {
			if armstandin.Str(p["name"]) == "http-probe" {
				armstandin.Obj(p["properties"])["requestPath"] = "/healthz"
			}
		}
	})
	err := r.d.Apply(table(2, "green", "blue"))
	var drift *azure.DriftError
	if !errors.As(err, &drift) || !strings.Contains(err.Error(), "/healthz") {
		t.Fatalf("apply over a probe path of no slot: %v, want drift naming it", err)
	}
	if n := len(r.arm.Writes()); n != 0 {
		t.Fatalf("%d writes over a state vipswap does not know", n)
	}
	if got := r.view(); got.prod != "/healthz" {
		t.Fatalf("the hand change was overwritten: %v", got)
	}
}

// An operation URL naming another host (a hostile or broken answer) is
// not followed: ARM's bearer token goes to ARM's host only.
func TestOperationOnAnotherHostGetsNoToken(t *testing.T) {
	r := newRig(t, -1, nil)
	var asked, withToken atomic.Int64
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		asked.Add(1)
		if req.Header.Get("Authorization") != "" {
			withToken.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"Succeeded"}`))
	}))
	t.Cleanup(other.Close)
	r.arm.Fault(armstandin.Faults{OpHost: other.URL})
	err := r.d.Apply(table(2, "green", "blue"))
	if n := withToken.Load(); n != 0 {
		t.Fatalf("the bearer token went to %s %d times", other.URL, n)
	}
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "not Azure Resource Manager") {
		t.Fatalf("apply whose operation points elsewhere: %v, want one line saying so", err)
	}
	t.Logf("%s asked %d times; apply: %v", other.URL, asked.Load(), err)
	if ps := r.d.PlaneStatus(); ps.Applied {
		t.Fatalf("status says applied: %+v", ps)
	}
}

// A write whose operation was not seen to finish may still have taken
// effect: the next apply that finds it in place asks the VIP before it
// calls the switch done.
func TestWriteNotSeenToFinishIsConfirmedAtTheVIP(t *testing.T) {
	r := newRig(t, 0, func(o *Options) { o.Conn.OperationTimeout = 2 * time.Second })
	r.vip.Freeze()
	r.d.o.Confirm.Deadline = 300 * time.Millisecond
	r.arm.Fault(armstandin.Faults{OpPolls: -1})
	if err := r.d.Apply(table(2, "green", "blue")); err == nil || !strings.Contains(err.Error(), "did not finish in time") {
		t.Fatalf("apply of a never-ending operation: %v", err)
	}
	r.arm.Fault(armstandin.Faults{})
	var nc *azure.NotConvergedError
	if err := r.d.Apply(table(2, "green", "blue")); !errors.As(err, &nc) {
		t.Fatalf("the retry found the change in place: %v, want the VIP asked (and not converged)", err)
	}
	if ps := r.d.PlaneStatus(); ps.Applied {
		t.Fatalf("status says applied while the VIP never showed it: %+v", ps)
	}
}

// Close ends an apply in flight (a VIP confirmation that would wait its
// whole deadline), so a node's shutdown does not wait on Azure.
func TestCloseEndsAnApplyInFlight(t *testing.T) {
	r := newRig(t, 0, nil)
	r.vip.Freeze()
	r.d.o.Confirm.Deadline = time.Hour
	done := make(chan error, 1)
	go func() { done <- r.d.Apply(table(2, "green", "blue")) }()
	vstest.WaitFor(t, 30*time.Second, func() error {
		if n := len(r.arm.Writes()); n != 1 {
			return fmt.Errorf("%d writes", n)
		}
		return nil
	})
	go r.d.Close()
	select {
	case err := <-done:
		var nc *azure.NotConvergedError
		if err == nil || errors.As(err, &nc) {
			t.Fatalf("apply ended by Close: %v, want it ended as cancelled", err)
		}
		t.Logf("apply ended by Close: %v", err)
	case <-time.After(2 * time.Minute): // a guard against a hang, not a measure
		t.Fatal("Apply still waits on the VIP two minutes after Close")
	}
}
