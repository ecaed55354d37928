package armstandin

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
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
	if code, _ := do(t, s, http.MethodPatch, op, "", map[string]any{"properties": map[string]any{"weight": 1000.0}}); code != http.StatusOK {
		t.Fatalf("origin weight 1000: %d", code)
	}
}
