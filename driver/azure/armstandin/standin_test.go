package armstandin

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// do sends a request to the stand-in as a client with a token would.
func do(t *testing.T, s *Server, method, path, ifMatch string, body any) (int, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.URL()+path+"?api-version=2024-05-01", r)
	req.Header.Set("Authorization", "Bearer t")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := s.TLS.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The stand-in's checks bite: a test that passes against it passed
// them.
func TestStandInRefusesWhatARMRefuses(t *testing.T) {
	s := New()
	defer s.Close()
	s.Validate("loadBalancers", LoadBalancerRules)
	path := LBPath("rg", "lb")
	s.Put(path, LoadBalancer("rg", "lb", "/a", "/b", "0"))
	etag := Str(s.Get(path)["etag"])

	req, _ := http.NewRequest(http.MethodGet, s.URL()+path+"?api-version=2024-05-01", nil)
	if resp, err := s.TLS.Client().Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a request without a token: %v %v", resp.StatusCode, err)
	}

	bad := func(mut func(Resource)) Resource {
		r := s.Get(path)
		mut(r)
		return r
	}
	probe := func(r Resource, i int) map[string]any {
		return Obj(List(Obj(r["properties"])["probes"])[i]["properties"])
	}
	for name, tc := range map[string]struct {
		body Resource
		code string
	}{
		"no location":       {bad(func(r Resource) { delete(r, "location") }), "LocationRequired"},
		"path on Tcp probe": {bad(func(r Resource) { probe(r, 0)["protocol"] = "Tcp" }), "ProbeRequestPathNotAllowed"},
		"no path on Http":   {bad(func(r Resource) { delete(probe(r, 0), "requestPath") }), "InvalidProbeRequestPath"},
		"relative path":     {bad(func(r Resource) { probe(r, 1)["requestPath"] = "api/ping" }), "InvalidProbeRequestPath"},
		"interval of 1s":    {bad(func(r Resource) { probe(r, 0)["intervalInSeconds"] = 1.0 }), "InvalidRequestFormat"},
		"port 0":            {bad(func(r Resource) { probe(r, 0)["port"] = 0.0 }), "InvalidRequestFormat"},
		"rule to no probe": {bad(func(r Resource) {
			p := Obj(r["properties"])
			p["probes"] = p["probes"].([]any)[:1]
		}), "InvalidResourceReference"},
	} {
		code, body := do(t, s, http.MethodPut, path, etag, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.code) {
			t.Errorf("%s: %d %s, want 400 %s", name, code, body, tc.code)
		}
	}
	if got := Str(s.Get(path)["etag"]); got != etag {
		t.Fatalf("a refused write changed the ETag: %s -> %s", etag, got)
	}
	if code, body := do(t, s, http.MethodPut, path, `W/"stale"`, s.Get(path)); code != http.StatusPreconditionFailed {
		t.Fatalf("a stale If-Match: %d %s", code, body)
	}
	if code, _ := do(t, s, http.MethodPut, path, etag, s.Get(path)); code != http.StatusOK {
		t.Fatalf("a valid write under the right ETag: %d", code)
	}
	if code, _ := do(t, s, http.MethodPut, path, "", "not an object"); code != http.StatusBadRequest {
		t.Fatalf("a body that is not an object: %d", code)
	}

	s.Validate("origins", AFDOriginRules)
	op := OriginPath("rg", "fd", "g", "o")
	s.Put(op, Origin("o", "o.example.net", 10, true))
	for _, w := range []any{0.0, 1001.0, 2.5, "ten"} {
		if code, body := do(t, s, http.MethodPatch, op, "", map[string]any{"properties": map[string]any{"weight": w}}); code != http.StatusBadRequest {
			t.Errorf("origin weight %v: %d %s, want 400", w, code, body)
		}
	}
	if code, _ := do(t, s, http.MethodPatch, op, "", map[string]any{"properties": map[string]any{"weight": 1000.0}}); code != http.StatusAccepted {
		t.Fatalf("origin weight 1000: %d, want 202 (afdx.json: PATCH is a long-running operation)", code)
	}
}

// send is do with the answer's headers.
func send(t *testing.T, s *Server, method, path string, body any) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.URL()+path+"?api-version=2024-05-01", r)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := s.TLS.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// refuses sends each body as a PUT (or PATCH) of path and demands 400 with
// the code, the stored resource and its ETag left as they were.
func refuses(t *testing.T, s *Server, method, path string, cases map[string]struct {
	body Resource
	code string
}) {
	t.Helper()
	before := s.Get(path)
	for name, tc := range cases {
		code, body := do(t, s, method, path, "", tc.body)
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != http.StatusBadRequest || e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s: %d %s, want 400 {error:{code:%s,message}}", name, code, body, tc.code)
		}
	}
	if after := s.Get(path); !reflect.DeepEqual(before, after) {
		t.Fatalf("refused writes changed %s:\n%v\n%v", path, before, after)
	}
}

// edit returns a copy of the resource at path changed by fn.
func edit(s *Server, path string, fn func(props map[string]any)) Resource {
	r := s.Get(path)
	fn(Obj(r["properties"]))
	return r
}

func nth(props map[string]any, key string, i int) map[string]any {
	return Obj(List(props[key])[i]["properties"])
}

// The load balancer rules of loadBalancer.json (2024-05-01): probes need
// a protocol of Http, Https or Tcp and an integer port of 1 to 65535,
// intervalInSeconds at least 5, numberOfProbes and probeThreshold
// integers, names unique; load-balancing rules need a protocol of Tcp,
// Udp or All and a frontendPort of 0 to 65534, a backendPort of 0 to 65535.
func TestStandInFollowsLoadBalancerSpec(t *testing.T) {
	s := New()
	defer s.Close()
	s.Validate("loadBalancers", LoadBalancerRules)
	path := LBPath("rg", "lb")
	s.Put(path, LoadBalancer("rg", "lb", "/a", "/b", "0"))
	type tc = struct {
		body Resource
		code string
	}
	refuses(t, s, http.MethodPut, path, map[string]tc{
		"probe without protocol":    {edit(s, path, func(p map[string]any) { delete(nth(p, "probes", 0), "protocol") }), "InvalidRequestFormat"},
		"probe protocol Udp":        {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["protocol"] = "Udp" }), "InvalidRequestFormat"},
		"probe protocol http":       {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["protocol"] = "http" }), "InvalidRequestFormat"},
		"probe without port":        {edit(s, path, func(p map[string]any) { delete(nth(p, "probes", 0), "port") }), "InvalidRequestFormat"},
		"probe port 65536":          {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["port"] = 65536.0 }), "InvalidRequestFormat"},
		"probe port 80.5":           {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["port"] = 80.5 }), "InvalidRequestFormat"},
		"probe port as text":        {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["port"] = "80" }), "InvalidRequestFormat"},
		"interval of 4s":            {edit(s, path, func(p map[string]any) { nth(p, "probes", 1)["intervalInSeconds"] = 4.0 }), "InvalidRequestFormat"},
		"interval of 5.5s":          {edit(s, path, func(p map[string]any) { nth(p, "probes", 1)["intervalInSeconds"] = 5.5 }), "InvalidRequestFormat"},
		"numberOfProbes as text":    {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["numberOfProbes"] = "2" }), "InvalidRequestFormat"},
		"probeThreshold of 1.5":     {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["probeThreshold"] = 1.5 }), "InvalidRequestFormat"},
		"noHealthyBackendsBehavior": {edit(s, path, func(p map[string]any) { nth(p, "probes", 0)["noHealthyBackendsBehavior"] = "Drop" }), "InvalidRequestFormat"},
		"path on Https probe missing": {edit(s, path, func(p map[string]any) {
			nth(p, "probes", 0)["protocol"] = "Https"
			nth(p, "probes", 0)["requestPath"] = ""
		}), "InvalidProbeRequestPath"},
		"two probes of one name": {edit(s, path, func(p map[string]any) {
			List(p["probes"])[1]["name"] = "HTTP-probe"
		}), "InvalidRequestFormat"},
		"rule without protocol":   {edit(s, path, func(p map[string]any) { delete(nth(p, "loadBalancingRules", 0), "protocol") }), "InvalidRequestFormat"},
		"rule protocol Icmp":      {edit(s, path, func(p map[string]any) { nth(p, "loadBalancingRules", 0)["protocol"] = "Icmp" }), "InvalidRequestFormat"},
		"rule without frontend":   {edit(s, path, func(p map[string]any) { delete(nth(p, "loadBalancingRules", 0), "frontendPort") }), "InvalidRequestFormat"},
		"frontendPort 65535":      {edit(s, path, func(p map[string]any) { nth(p, "loadBalancingRules", 1)["frontendPort"] = 65535.0 }), "InvalidRequestFormat"},
		"backendPort 65536":       {edit(s, path, func(p map[string]any) { nth(p, "loadBalancingRules", 1)["backendPort"] = 65536.0 }), "InvalidRequestFormat"},
		"backendPort -1":          {edit(s, path, func(p map[string]any) { nth(p, "loadBalancingRules", 1)["backendPort"] = -1.0 }), "InvalidRequestFormat"},
		"two rules of one name":   {edit(s, path, func(p map[string]any) { List(p["loadBalancingRules"])[1]["name"] = "http-rule" }), "InvalidRequestFormat"},
		"one frontend port twice": {edit(s, path, func(p map[string]any) { nth(p, "loadBalancingRules", 1)["frontendPort"] = 80.0 }), "InvalidRequestFormat"},
		"All over a Tcp port": {edit(s, path, func(p map[string]any) {
			nth(p, "loadBalancingRules", 1)["frontendPort"], nth(p, "loadBalancingRules", 1)["protocol"] = 80.0, "All"
		}), "InvalidRequestFormat"},
		"idle timeout of 31": {edit(s, path, func(p map[string]any) { nth(p, "loadBalancingRules", 0)["idleTimeoutInMinutes"] = 31.0 }), "InvalidRequestFormat"},
	})

	// What the specification allows passes: a Tcp probe without a path,
	// a rule on any port (0), a backendPort of 65535, bounds included.
	ok := edit(s, path, func(p map[string]any) {
		pr := nth(p, "probes", 1)
		pr["protocol"], pr["port"], pr["intervalInSeconds"], pr["probeThreshold"] = "Tcp", 65535.0, 5.0, 1.0
		delete(pr, "requestPath")
		nth(p, "loadBalancingRules", 1)["frontendPort"] = 0.0
		nth(p, "loadBalancingRules", 1)["backendPort"] = 65535.0
		nth(p, "loadBalancingRules", 1)["protocol"] = "All"
		// readOnly fields a client echoes back are ignored, not refused.
		p["provisioningState"], p["resourceGuid"] = "Failed", "forged"
	})
	resp, body := send(t, s, http.MethodPut, path, ok)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Azure-AsyncOperation") == "" {
		t.Fatalf("a PUT the specification allows: %d %s, want 200 with Azure-AsyncOperation", resp.StatusCode, body)
	}
	if got := Obj(s.Get(path)["properties"]); got["provisioningState"] == "Failed" || got["resourceGuid"] == "forged" {
		t.Fatalf("readOnly fields were stored as sent: %v %v", got["provisioningState"], got["resourceGuid"])
	}
	// PUT of a new resource is 201.
	if resp, body := send(t, s, http.MethodPut, LBPath("rg", "lb2"), LoadBalancer("rg", "lb2", "/a", "/b", "0")); resp.StatusCode != http.StatusCreated {
		t.Fatalf("a PUT that creates: %d %s, want 201", resp.StatusCode, body)
	}
}

// Microsoft.Network's PATCH is UpdateTags: a TagsObject, answered 200
// with the resource, no operation to poll; anything but tags is refused.
func TestStandInNetworkPatchIsTagsOnly(t *testing.T) {
	s := New()
	defer s.Close()
	s.Validate("loadBalancers", LoadBalancerRules)
	path := LBPath("rg", "lb")
	s.Put(path, LoadBalancer("rg", "lb", "/a", "/b", "0"))
	refuses(t, s, http.MethodPatch, path, map[string]struct {
		body Resource
		code string
	}{
		"properties by PATCH": {Resource{"properties": map[string]any{"probes": []any{}}}, "InvalidRequestContent"},
		"location by PATCH":   {Resource{"location": "northeurope", "tags": map[string]any{"a": "b"}}, "InvalidRequestContent"},
	})
	etag := Str(s.Get(path)["etag"])
	resp, body := send(t, s, http.MethodPatch, path, Resource{"tags": map[string]any{"ActiveSlot": "1"}})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Azure-AsyncOperation") != "" || resp.Header.Get("Location") != "" {
		t.Fatalf("PATCH of tags: %d %v %s, want 200 with no operation", resp.StatusCode, resp.Header, body)
	}
	got := s.Get(path)
	if Str(Obj(got["tags"])["ActiveSlot"]) != "1" || Str(got["etag"]) == etag || resp.Header.Get("ETag") != Str(got["etag"]) {
		t.Fatalf("PATCH of tags stored %v (ETag %s -> %s, header %s)", got["tags"], etag, got["etag"], resp.Header.Get("ETag"))
	}
	if Str(Obj(got["properties"])["provisioningState"]) != "Succeeded" {
		t.Fatalf("PATCH of tags left provisioningState %v", Obj(got["properties"])["provisioningState"])
	}
}

// A resource read answers its ETag in the header and the body alike, in
// ARM's weak form, and a missing one answers ARM's error shape.
func TestStandInETagAndErrorShape(t *testing.T) {
	s := New()
	defer s.Close()
	path := LBPath("rg", "lb")
	s.Put(path, LoadBalancer("rg", "lb", "/a", "/b", "0"))
	resp, body := send(t, s, http.MethodGet, path, nil)
	var r Resource
	if err := json.Unmarshal([]byte(body), &r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d %v", resp.StatusCode, err)
	}
	if e := resp.Header.Get("ETag"); e == "" || e != Str(r["etag"]) || !strings.HasPrefix(e, `W/"`) || !strings.HasSuffix(e, `"`) {
		t.Fatalf("ETag header %q, body %v", e, r["etag"])
	}
	resp, body = send(t, s, http.MethodGet, LBPath("rg", "none"), nil)
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != http.StatusNotFound || e.Error.Code != "ResourceNotFound" || resp.Header.Get("x-ms-error-code") != "ResourceNotFound" {
		t.Fatalf("a missing resource: %d %s", resp.StatusCode, body)
	}
}

// The request routing rules of applicationGateway.json (2024-05-01):
// ruleType Basic or PathBasedRouting, priority an integer of 1 to 20000
// (required on a v2 gateway by the service), unique; references to
// listeners, pools, settings and, for PathBasedRouting, a URL path map.
func TestStandInFollowsAppGatewaySpec(t *testing.T) {
	s := New()
	defer s.Close()
	s.Validate("applicationGateways", AppGatewayRules)
	path := AppGWPath("rg", "gw")
	s.Put(path, AppGateway("rg", "gw", map[string][]string{"blue": {"10.0.0.1"}, "green": {"10.0.0.2"}}, map[string]string{"prod": "blue", "stage": "green"}))
	rule := func(p map[string]any, i int) map[string]any { return nth(p, "requestRoutingRules", i) }
	type tc = struct {
		body Resource
		code string
	}
	refuses(t, s, http.MethodPut, path, map[string]tc{
		"no ruleType":       {edit(s, path, func(p map[string]any) { delete(rule(p, 0), "ruleType") }), "InvalidRequestFormat"},
		"ruleType Redirect": {edit(s, path, func(p map[string]any) { rule(p, 0)["ruleType"] = "Redirect" }), "InvalidRequestFormat"},
		"priority 0":        {edit(s, path, func(p map[string]any) { rule(p, 0)["priority"] = 0.0 }), "InvalidRequestFormat"},
		"priority 20001":    {edit(s, path, func(p map[string]any) { rule(p, 0)["priority"] = 20001.0 }), "InvalidRequestFormat"},
		"priority 10.5":     {edit(s, path, func(p map[string]any) { rule(p, 0)["priority"] = 10.5 }), "InvalidRequestFormat"},
		"priority as text":  {edit(s, path, func(p map[string]any) { rule(p, 0)["priority"] = "100" }), "InvalidRequestFormat"},
		"no priority on v2": {edit(s, path, func(p map[string]any) { delete(rule(p, 0), "priority") }), "ApplicationGatewayRequestRoutingRulePriorityCannotBeEmpty"},
		"priority twice":    {edit(s, path, func(p map[string]any) { rule(p, 1)["priority"] = rule(p, 0)["priority"] }), "ApplicationGatewayRequestRoutingRulePriorityAlreadyExists"},
		"rule name twice": {edit(s, path, func(p map[string]any) {
			List(p["requestRoutingRules"])[1]["name"] = List(p["requestRoutingRules"])[0]["name"]
		}), "InvalidRequestFormat"},
		"path rule without map": {edit(s, path, func(p map[string]any) { rule(p, 0)["ruleType"] = "PathBasedRouting" }), "InvalidResourceReference"},
		"pool that is not there": {edit(s, path, func(p map[string]any) {
			rule(p, 0)["backendAddressPool"] = map[string]any{"id": AppGWPath("rg", "gw") + "/backendAddressPools/red"}
		}), "InvalidResourceReference"},
	})
	// Allowed: priority 1 and 20000; a v1 gateway's rule without one; a
	// path-based rule whose map is in the gateway.
	ok := edit(s, path, func(p map[string]any) {
		rule(p, 0)["priority"], rule(p, 1)["priority"] = 1.0, 20000.0
	})
	if code, body := do(t, s, http.MethodPut, path, "", ok); code != http.StatusOK {
		t.Fatalf("priorities 1 and 20000: %d %s", code, body)
	}
	ok = edit(s, path, func(p map[string]any) {
		p["sku"] = map[string]any{"name": "Standard_Medium", "tier": "Standard", "capacity": 2.0}
		delete(rule(p, 0), "priority")
		p["urlPathMaps"] = []any{map[string]any{"name": "paths", "id": path + "/urlPathMaps/paths"}}
		rule(p, 1)["ruleType"] = "PathBasedRouting"
		rule(p, 1)["urlPathMap"] = map[string]any{"id": path + "/urlPathMaps/paths"}
	})
	if code, body := do(t, s, http.MethodPut, path, "", ok); code != http.StatusOK {
		t.Fatalf("a v1 rule without priority and a path-based rule with its map: %d %s", code, body)
	}
}

// backendhealth is a POST answered as a long-running operation: 202 with
// Location (final-state-via location), the poll 202 while it runs, then
// 200 with the result.
func TestStandInBackendHealthIsLocationOperation(t *testing.T) {
	s := New()
	defer s.Close()
	s.Fault(Faults{OpPolls: 1})
	path := AppGWPath("rg", "gw")
	s.Put(path, AppGateway("rg", "gw", map[string][]string{"blue": {"10.0.0.1"}}, map[string]string{"prod": "blue"}))
	s.Action("backendhealth", func(*Server, string) (any, error) {
		return map[string]any{"backendAddressPools": []any{}}, nil
	})
	resp, body := send(t, s, http.MethodPost, path+"/backendhealth", nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" || resp.Header.Get("Azure-AsyncOperation") != "" {
		t.Fatalf("POST backendhealth: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	poll := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, loc, nil)
		req.Header.Set("Authorization", "Bearer t")
		r, err := s.TLS.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if code, _ := poll(); code != http.StatusAccepted {
		t.Fatalf("first poll: %d, want 202", code)
	}
	if code, body := poll(); code != http.StatusOK || !strings.Contains(body, "backendAddressPools") {
		t.Fatalf("last poll: %d %s, want 200 with the result", code, body)
	}
	if resp, _ := send(t, s, http.MethodPost, AppGWPath("rg", "none")+"/backendhealth", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("backendhealth of a gateway that is not there: %d", resp.StatusCode)
	}
}

// The origin rules of afdx.json (2024-02-01): weight 1 to 1000, priority
// 1 to 5, httpPort and httpsPort 1 to 65535, all integers; enabledState
// Enabled or Disabled; hostName required. A PATCH is answered 202 with
// Azure-AsyncOperation, as the AFDOrigins_Update example shows.
func TestStandInFollowsFrontDoorOriginSpec(t *testing.T) {
	s := New()
	defer s.Close()
	s.Validate("origins", AFDOriginRules)
	path := OriginPath("rg", "fd", "g", "o")
	s.Put(path, Origin("o", "o.example.net", 10, true))
	patch := func(k string, v any) Resource { return Resource{"properties": map[string]any{k: v}} }
	type tc = struct {
		body Resource
		code string
	}
	refuses(t, s, http.MethodPatch, path, map[string]tc{
		"priority 0":        {patch("priority", 0.0), "BadRequest"},
		"priority 6":        {patch("priority", 6.0), "BadRequest"},
		"priority 1.5":      {patch("priority", 1.5), "BadRequest"},
		"httpPort 0":        {patch("httpPort", 0.0), "BadRequest"},
		"httpPort 65536":    {patch("httpPort", 65536.0), "BadRequest"},
		"httpsPort as text": {patch("httpsPort", "443"), "BadRequest"},
		"enabledState On":   {patch("enabledState", "On"), "BadRequest"},
		"enabledState case": {patch("enabledState", "enabled"), "BadRequest"},
		"hostName emptied":  {patch("hostName", ""), "BadRequest"},
		"hostName removed":  {patch("hostName", nil), "BadRequest"},
		"certificate check": {patch("enforceCertificateNameCheck", "yes"), "BadRequest"},
	})
	resp, body := send(t, s, http.MethodPatch, path, Resource{"properties": map[string]any{
		"weight": 1.0, "priority": 5.0, "enabledState": "Disabled", "httpPort": 65535.0,
		"deploymentStatus": "Failed", "originGroupName": "other", // readOnly: ignored
	}})
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Azure-AsyncOperation") == "" {
		t.Fatalf("PATCH of an origin: %d %v %s, want 202 with Azure-AsyncOperation", resp.StatusCode, resp.Header, body)
	}
	// AFDOrigin is a ProxyResource: no etag, in the body or the header.
	if resp, body := send(t, s, http.MethodGet, path, nil); resp.Header.Get("ETag") != "" || strings.Contains(body, `"etag"`) {
		t.Fatalf("a Front Door origin answered an ETag: %q %s", resp.Header.Get("ETag"), body)
	}
	p := Obj(s.Get(path)["properties"])
	if w, _ := Num(p["weight"]); w != 1 || p["enabledState"] != "Disabled" || p["deploymentStatus"] != nil || p["originGroupName"] != nil {
		t.Fatalf("stored after PATCH: %v", p)
	}
}

// An operation made to fail ends with ARM's status body {status: Failed,
// error: {code, message}} and the resource "Failed"; the fault is spent
// on one write.
func TestStandInOperationFails(t *testing.T) {
	s := New()
	defer s.Close()
	s.Fault(Faults{OpPolls: 1, OpFail: "InternalServerError"})
	path := LBPath("rg", "lb")
	s.Put(path, LoadBalancer("rg", "lb", "/a", "/b", "0"))
	status := func(op string) map[string]any {
		req, _ := http.NewRequest(http.MethodGet, op, nil)
		req.Header.Set("Authorization", "Bearer t")
		r, err := s.TLS.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(r.Body).Decode(&out); err != nil || r.StatusCode != http.StatusOK {
			t.Fatalf("operation status: %d %v", r.StatusCode, err)
		}
		return out
	}
	for i, want := range []string{"Failed", "Succeeded"} {
		resp, body := send(t, s, http.MethodPut, path, s.Get(path))
		op := resp.Header.Get("Azure-AsyncOperation")
		if resp.StatusCode != http.StatusOK || op == "" {
			t.Fatalf("write %d: %d %s", i, resp.StatusCode, body)
		}
		if got := status(op); got["status"] != "InProgress" {
			t.Fatalf("write %d, first poll: %v", i, got)
		}
		got := status(op)
		if got["status"] != want {
			t.Fatalf("write %d: operation %v, want %s", i, got, want)
		}
		if want == "Failed" && Str(Obj(got["error"])["code"]) != "InternalServerError" {
			t.Fatalf("a failed operation without its error: %v", got)
		}
		if ps := Obj(s.Get(path)["properties"])["provisioningState"]; ps != want {
			t.Fatalf("write %d: provisioningState %v, want %s", i, ps, want)
		}
	}
}
