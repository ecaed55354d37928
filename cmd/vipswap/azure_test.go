package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/driver/azure/armstandin"
	"github.com/vipswap/vipswap/internal/etcdtest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

const seedRG, seedLB = "vmsstf-rg", "api-prod-vmss-lb"

// seed000 serves seed 000's load balancer (blue active) in a stand-in
// ARM, a VIP in front of apps that follows its prod probe delay after a
// write, and returns the azure_lb block that drives it.
func seed000(t *testing.T, apps map[string][]*vstest.App, delay time.Duration) (*armstandin.Server, *armstandin.VIP, string) {
	t.Helper()
	arm := armstandin.New()
	t.Cleanup(arm.Close)
	arm.Validate("loadBalancers", armstandin.LoadBalancerRules)
	arm.Put(armstandin.LBPath(seedRG, seedLB), armstandin.LoadBalancer(seedRG, seedLB, "/api/ping?slot=slot0", "/api/ping?slot=slot1", "0"))
	paths := map[string]string{"/api/ping?slot=slot0": "blue", "/api/ping?slot=slot1": "green"}
	vip := arm.NewVIP(map[string]string{"blue": "http://" + apps["blue"][0].Addr, "green": "http://" + apps["green"][0].Addr}, delay,
		func(s *armstandin.Server) map[string]int {
			for _, p := range armstandin.List(armstandin.Obj(s.Get(armstandin.LBPath(seedRG, seedLB))["properties"])["probes"]) {
				if armstandin.Str(p["name"]) == "http-probe" {
					return map[string]int{paths[armstandin.Str(armstandin.Obj(p["properties"])["requestPath"])]: 1}
				}
			}
			return nil
		})
	t.Cleanup(vip.Close)
	return arm, vip, fmt.Sprintf(`azure_lb:
  subscription: %s
  resource_group: %s
  endpoint: %s
  poll_every: 1s
  name: %s
  probes: {prod: http-probe, stage: http-probe-stage}
  paths: {blue: "/api/ping?slot=slot0", green: "/api/ping?slot=slot1"}
  tag_values: {blue: "0", green: "1"}
  confirm:
    url: %s/api/test
    window: 5
    every: 50ms
    deadline: 1m
measure:
  before: 1s
  after: 1s
`, armstandin.Sub, seedRG, arm.URL(), seedLB, vip.URL)
}

// serveAzure starts vipswap serve on cfg in dir under azureEnv.
func serveAzure(t *testing.T, arm *armstandin.Server, dir, cfg string) *switchtest.Switch {
	t.Helper()
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(vstest.Binary(t), "serve", "-c", path)
	cmd.Env = azureEnv(t, arm)
	return switchtest.Attach(t, vstest.StartCmd(t, cmd))
}

// azureEnv is the environment under which vipswap reaches the stand-in
// as it would Azure: its certificate trusted (SSL_CERT_FILE), and
// DefaultAzureCredential finding a managed identity endpoint.
func azureEnv(t *testing.T, arm *armstandin.Server) []string {
	t.Helper()
	idp := armstandin.NewIdentityEndpoint()
	t.Cleanup(idp.Close)
	ca := filepath.Join(t.TempDir(), "arm.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: arm.TLS.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZURE_") && !strings.HasPrefix(kv, "IDENTITY_") && !strings.HasPrefix(kv, "MSI_") {
			env = append(env, kv)
		}
	}
	return append(env, "SSL_CERT_FILE="+ca, "IDENTITY_ENDPOINT="+idp.URL+"/msi/token", "IDENTITY_HEADER="+armstandin.IdentityHeader)
}

// TestAzureLBSwap (the Azure Load Balancer driver end to end): vipswap
// serve drives seed 000's load balancer in a stand-in ARM through the SDK
// and DefaultAzureCredential; the dry run prints the seed's az commands
// and writes nothing; the swap flips the probes in one PUT and its
// history entry holds the convergence time measured at the VIP.
func TestAzureLBSwap(t *testing.T) {
	t.Parallel()
	apps, addrs := startStatic(t, 1)
	const delay = time.Second
	arm, vip, block := seed000(t, apps, delay)
	dir := t.TempDir()
	cfg := testConfig(dir, staticSlots(addrs)) + block
	sw := serveAzure(t, arm, dir, cfg)
	sw.WaitHealthy(t)
	waitApplied(t, sw)
	if n := len(arm.Writes()); n != 0 {
		t.Fatalf("vipswap wrote %d times to a load balancer that already showed its state", n)
	}

	code, out := cli(t, sw, "swap", "--dry-run")
	for _, want := range []string{
		`az network lb probe update -g vmsstf-rg --lb-name api-prod-vmss-lb -n http-probe --set "requestPath='/api/ping?slot=slot1'"`,
		`az network lb probe update -g vmsstf-rg --lb-name api-prod-vmss-lb -n http-probe-stage --set "requestPath='/api/ping?slot=slot0'"`,
		`az network lb update -g vmsstf-rg -n api-prod-vmss-lb --set "tags.ActiveSlot=1"`,
		`tags.ActiveSlot "0" -> "1"`,
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("swap --dry-run (exit %d):\n%s\nwant a line %s", code, out, want)
		}
	}
	if n := len(arm.Writes()); n != 0 {
		t.Fatalf("the dry run wrote %d times", n)
	}
	t.Logf("vipswap swap --dry-run:\n%s", out)

	ctx := context.Background()
	res, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: "release 2"})
	if err != nil || !res.Applied {
		t.Fatalf("swap: %+v, %v", res, err)
	}
	if n := len(arm.Writes()); n != 1 {
		t.Fatalf("%d writes for one swap, want 1 PUT", n)
	}
	if got := vip.InForce(); got["green"] != 1 {
		t.Fatalf("the VIP routes %v after the swap returned", got)
	}
	var e wire.HistoryEntry
	vstest.WaitFor(t, 30*time.Second, func() error {
		if e, err = sw.Client.Entry(ctx, res.HistoryID); err != nil {
			return err
		}
		if e.Measurement == nil || e.Measurement.ConvergedSeconds <= 0 {
			return fmt.Errorf("measurement %+v: want the load balancer's convergence time", e.Measurement)
		}
		return nil
	})
	if e.Measurement.ConvergedSeconds < delay.Seconds() {
		t.Fatalf("converged in %.3fs, sooner than the VIP could show it (%v after the write)", e.Measurement.ConvergedSeconds, delay)
	}
	t.Logf("history entry %d: converged in %.3fs through the stand-in (its VIP follows %v after the write)", e.ID, e.Measurement.ConvergedSeconds, delay)

	// A load balancer's probes cannot split prod: a shift is refused
	// before it is committed, and nothing is written.
	ten := 10.0
	if _, err := sw.Client.Shift(ctx, wire.ShiftRequest{To: "blue", Weight: &ten}); err == nil || !strings.Contains(err.Error(), "cannot split") {
		t.Fatalf("a shift with azure_lb: %v, want it refused", err)
	}
	st, err := sw.Client.Status(ctx)
	if err != nil || st.Revision != res.Revision {
		t.Fatalf("after the refused shift the state is at revision %d (%v), want %d", st.Revision, err, res.Revision)
	}
	if n := len(arm.Writes()); n != 1 {
		t.Fatalf("%d writes after a refused shift", n)
	}
}

// TestAzureLBCluster: two vipswap nodes on one etcd drive one load
// balancer: for each swap (asked of either node) exactly one PUT reaches
// ARM, from the node that leads; the other waits until the load
// balancer shows it, and both report the revision applied.
func TestAzureLBCluster(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t)
	apps, addrs := startStatic(t, 1)
	arm, _, block := seed000(t, apps, 200*time.Millisecond)
	var nodes []*switchtest.Switch
	for range 2 {
		dir := t.TempDir()
		nodes = append(nodes, serveAzure(t, arm, dir, clusterConfig(dir, etcd.Endpoint, "/azure-cluster/", staticSlots(addrs))+block))
	}
	for _, sw := range nodes {
		sw.WaitHealthy(t)
	}
	ctx := context.Background()
	for i, sw := range []*switchtest.Switch{nodes[0], nodes[1]} {
		res, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: fmt.Sprintf("swap %d", i)})
		if err != nil || !res.Applied {
			t.Fatalf("swap %d through node %d: %+v, %v", i, i, res, err)
		}
		for j, n := range nodes {
			vstest.WaitFor(t, 60*time.Second, func() error {
				st, err := n.Client.Status(ctx)
				if err != nil {
					return err
				}
				if len(st.DataPlanes) != 1 || !st.DataPlanes[0].Applied || st.DataPlanes[0].Revision < res.Revision {
					return fmt.Errorf("node %d: %+v, want revision %d applied", j, st.DataPlanes, res.Revision)
				}
				return nil
			})
		}
		if n := len(arm.Writes()); n != i+1 {
			t.Fatalf("after %d swaps ARM received %d writes, want exactly one per swap", i+1, n)
		}
	}
}

// waitConverged waits until history entry id holds a convergence time
// and returns it.
func waitConverged(t *testing.T, sw *switchtest.Switch, id uint64) float64 {
	t.Helper()
	var e wire.HistoryEntry
	vstest.WaitFor(t, 60*time.Second, func() error {
		var err error
		if e, err = sw.Client.Entry(context.Background(), id); err != nil {
			return err
		}
		if e.Measurement == nil || e.Measurement.ConvergedSeconds <= 0 {
			return fmt.Errorf("entry %d measurement %+v: want the convergence time", id, e.Measurement)
		}
		return nil
	})
	return e.Measurement.ConvergedSeconds
}

// TestAzureFrontDoorShiftAndAbort (the Front Door driver end to end): a
// shift to 10 % sets the release units' origin weights, an abort
// disables the canary's origin, and each history entry holds the
// convergence time measured at the endpoint.
func TestAzureFrontDoorShiftAndAbort(t *testing.T) {
	t.Parallel()
	const rg, profile, group = "alwayson-global-rg", "alwayson-fd", "backends-api"
	apps, addrs := startStatic(t, 1)
	arm := armstandin.New()
	t.Cleanup(arm.Close)
	arm.Validate("origins", armstandin.AFDOriginRules)
	origins := map[string]string{"blue": "unit-1", "green": "unit-2"}
	arm.Put(armstandin.OriginPath(rg, profile, group, "unit-1"), armstandin.Origin("unit-1", "unit1.example.net", 1000, true))
	arm.Put(armstandin.OriginPath(rg, profile, group, "unit-2"), armstandin.Origin("unit-2", "unit2.example.net", 1000, false))
	split := func(s *armstandin.Server) map[string]int {
		out := map[string]int{}
		for slot, n := range origins {
			p := armstandin.Obj(s.Get(armstandin.OriginPath(rg, profile, group, n))["properties"])
			if p["enabledState"] == "Enabled" {
				w, _ := armstandin.Num(p["weight"])
				out[slot] = int(w)
			}
		}
		return out
	}
	const delay = 500 * time.Millisecond
	vip := arm.NewVIP(map[string]string{"blue": "http://" + apps["blue"][0].Addr, "green": "http://" + apps["green"][0].Addr}, delay, split)
	t.Cleanup(vip.Close)
	dir := t.TempDir()
	cfg := testConfig(dir, staticSlots(addrs)) + fmt.Sprintf(`azure_frontdoor:
  subscription: %s
  resource_group: %s
  endpoint: %s
  poll_every: 1s
  profile: %s
  origin_group: %s
  origins: {blue: [unit-1], green: [unit-2]}
  confirm:
    url: %s/api/test
    window: 5
    every: 20ms
    deadline: 1m
measure:
  before: 1s
  after: 1s
`, armstandin.Sub, rg, arm.URL(), profile, group, vip.URL)
	sw := serveAzure(t, arm, dir, cfg)
	sw.WaitHealthy(t)
	waitApplied(t, sw)

	ctx := context.Background()
	ten := 10.0
	res, err := sw.Client.Shift(ctx, wire.ShiftRequest{To: "green", Weight: &ten})
	if err != nil || !res.Applied {
		t.Fatalf("shift: %+v, %v", res, err)
	}
	if got := split(arm); got["blue"] != 900 || got["green"] != 100 {
		t.Fatalf("front door splits %v after a shift to 10 %%", got)
	}
	shift := waitConverged(t, sw, res.HistoryID)
	res, err = sw.Client.Abort(ctx, wire.ChangeRequest{Reason: "canary looks wrong"})
	if err != nil || !res.Applied {
		t.Fatalf("abort: %+v, %v", res, err)
	}
	if got := split(arm); got["blue"] != 1000 || got["green"] != 0 {
		t.Fatalf("front door splits %v after the abort", got)
	}
	abort := waitConverged(t, sw, res.HistoryID)
	if shift < delay.Seconds() || abort < delay.Seconds() {
		t.Fatalf("converged in %.3fs and %.3fs, sooner than the endpoint could show it (%v)", shift, abort, delay)
	}
	t.Logf("through the stand-in (endpoint follows %v after each write): shift to 10 %% converged in %.3fs, abort in %.3fs", delay, shift, abort)
}

// TestAzureAppGWSwap (the Application Gateway driver end to end): a swap
// repoints both routing rules in one PUT, with the gateway's backend
// health as the health in use, and the history entry holds the
// convergence time measured at the gateway.
func TestAzureAppGWSwap(t *testing.T) {
	t.Parallel()
	const rg, gw = "frontend-rg", "bluegreen-appgw"
	apps, addrs := startStatic(t, 1)
	arm := armstandin.New()
	t.Cleanup(arm.Close)
	arm.Validate("applicationGateways", armstandin.AppGatewayRules)
	host := func(a string) string { return a[:strings.LastIndex(a, ":")] }
	arm.Put(armstandin.AppGWPath(rg, gw), armstandin.AppGateway(rg, gw,
		map[string][]string{"pool-blue": {host(addrs["blue"][0])}, "pool-green": {host(addrs["green"][0])}},
		map[string]string{"rule-prod": "pool-blue", "rule-stage": "pool-green"}))
	arm.Action("backendhealth", func(s *armstandin.Server, path string) (any, error) {
		var out []any
		for _, p := range armstandin.List(armstandin.Obj(s.Get(path)["properties"])["backendAddressPools"]) {
			var servers []any
			for _, a := range armstandin.List(armstandin.Obj(p["properties"])["backendAddresses"]) {
				servers = append(servers, map[string]any{"address": a["ipAddress"], "health": "Up"})
			}
			out = append(out, map[string]any{"backendAddressPool": map[string]any{"id": p["id"]},
				"backendHttpSettingsCollection": []any{map[string]any{"servers": servers}}})
		}
		return map[string]any{"backendAddressPools": out}, nil
	})
	prodPool := func(s *armstandin.Server) string {
		for _, r := range armstandin.List(armstandin.Obj(s.Get(armstandin.AppGWPath(rg, gw))["properties"])["requestRoutingRules"]) {
			if armstandin.Str(r["name"]) == "rule-prod" {
				id := armstandin.Str(armstandin.Obj(armstandin.Obj(r["properties"])["backendAddressPool"])["id"])
				return id[strings.LastIndex(id, "/")+1:]
			}
		}
		return ""
	}
	const delay = 500 * time.Millisecond
	vip := arm.NewVIP(map[string]string{"blue": "http://" + apps["blue"][0].Addr, "green": "http://" + apps["green"][0].Addr}, delay,
		func(s *armstandin.Server) map[string]int {
			return map[string]int{strings.TrimPrefix(prodPool(s), "pool-"): 1}
		})
	t.Cleanup(vip.Close)
	dir := t.TempDir()
	cfg := testConfig(dir, staticSlots(addrs)) + fmt.Sprintf(`azure_appgw:
  subscription: %s
  resource_group: %s
  endpoint: %s
  poll_every: 1s
  name: %s
  rules: {prod: rule-prod, stage: rule-stage}
  pools: {blue: pool-blue, green: pool-green}
  health: appgw
  health_every: 1s
  confirm:
    url: %s/api/test
    window: 5
    every: 20ms
    deadline: 1m
measure:
  before: 1s
  after: 1s
`, armstandin.Sub, rg, arm.URL(), gw, vip.URL)
	sw := serveAzure(t, arm, dir, cfg)
	sw.WaitHealthy(t)
	waitApplied(t, sw)
	ctx := context.Background()
	res, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: "release 2"})
	if err != nil || !res.Applied {
		t.Fatalf("swap: %+v, %v", res, err)
	}
	if p := prodPool(arm); p != "pool-green" {
		t.Fatalf("the prod rule sends to %s after the swap", p)
	}
	puts := 0
	for _, w := range arm.Writes() {
		if w.Method == "PUT" {
			puts++
		}
	}
	if puts != 1 {
		t.Fatalf("%d PUTs of the gateway for one swap, want 1", puts)
	}
	took := waitConverged(t, sw, res.HistoryID)
	if took < delay.Seconds() {
		t.Fatalf("converged in %.3fs, sooner than the gateway could show it (%v)", took, delay)
	}
	st, err := sw.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Slots {
		for _, i := range s.Instances {
			if !i.Healthy {
				t.Fatalf("instance %s of %s not healthy by the gateway's backend health: %+v", i.Addr, s.Name, i)
			}
		}
	}
	t.Logf("through the stand-in (gateway follows %v after the write): swap converged in %.3fs", delay, took)
}
