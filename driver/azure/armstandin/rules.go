package armstandin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Credential is a token credential for the stand-in: a fixed token, or
// Err when set (credentials that fail).
type Credential struct{ Err error }

// GetToken implements azcore.TokenCredential.
func (c Credential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if c.Err != nil {
		return azcore.AccessToken{}, c.Err
	}
	return azcore.AccessToken{Token: "standin-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// The rules below are those Azure's REST API specification
// (azure-rest-api-specs, Microsoft.Network stable 2024-05-01 and
// Microsoft.Cdn 2024-02-01) and its documentation give for the fields the
// drivers write; each refusal carries the error code ARM answers with.

// LoadBalancerRules checks a load balancer written whole (PUT).
func LoadBalancerRules(old, next Resource) (string, string) {
	if Str(next["location"]) == "" {
		return "LocationRequired", "The location property is required for this definition."
	}
	if code, msg := tagRules(next); code != "" {
		return code, msg
	}
	props := Obj(next["properties"])
	probes := map[string]bool{}
	for i, p := range List(props["probes"]) {
		name := Str(p["name"])
		where := fmt.Sprintf("properties.probes[%d]", i)
		if name == "" {
			return "InvalidRequestFormat", where + ".name is required"
		}
		probes[strings.ToLower(name)] = true
		pp := Obj(p["properties"])
		proto := Str(pp["protocol"])
		switch proto {
		case "Http", "Https":
			path := Str(pp["requestPath"])
			if path == "" || !strings.HasPrefix(path, "/") {
				return "InvalidProbeRequestPath", where + ": requestPath is required for protocol " + proto + " and must start with /"
			}
		case "Tcp":
			if _, ok := pp["requestPath"]; ok {
				return "ProbeRequestPathNotAllowed", where + ": requestPath is not allowed for protocol Tcp"
			}
		default:
			return "InvalidRequestFormat", where + ".properties.protocol must be Http, Https or Tcp, got " + fmt.Sprint(pp["protocol"])
		}
		if port, ok := Num(pp["port"]); !ok || port < 1 || port > 65535 {
			return "InvalidRequestFormat", where + ".properties.port must be 1 to 65535"
		}
		if iv, ok := Num(pp["intervalInSeconds"]); ok && iv < 5 {
			return "InvalidRequestFormat", where + ".properties.intervalInSeconds must be at least 5"
		}
	}
	for i, r := range List(props["loadBalancingRules"]) {
		id := Str(Obj(Obj(r["properties"])["probe"])["id"])
		if id != "" && !probes[strings.ToLower(id[strings.LastIndex(id, "/")+1:])] {
			return "InvalidResourceReference", fmt.Sprintf("properties.loadBalancingRules[%d] references probe %s, which is not in the load balancer", i, id)
		}
	}
	return "", ""
}

// tagRules checks tags: names at most 512 characters, values at most 256,
// no more than 50.
func tagRules(r Resource) (string, string) {
	tags := Obj(r["tags"])
	if len(tags) > 50 {
		return "InvalidTag", "at most 50 tags"
	}
	for k, v := range tags {
		s, ok := v.(string)
		if !ok || len(k) > 512 || len(s) > 256 || strings.ContainsAny(k, "<>%&\\?/") {
			return "InvalidTagNameCharacters", "tag " + k + " is not valid"
		}
	}
	return "", ""
}

// AppGatewayRules checks an application gateway written whole (PUT).
func AppGatewayRules(old, next Resource) (string, string) {
	if Str(next["location"]) == "" {
		return "LocationRequired", "The location property is required for this definition."
	}
	if code, msg := tagRules(next); code != "" {
		return code, msg
	}
	props := Obj(next["properties"])
	ids := func(key string) map[string]bool {
		out := map[string]bool{}
		for _, e := range List(props[key]) {
			out[strings.ToLower(Str(e["id"]))] = true
		}
		return out
	}
	pools, listeners, settings := ids("backendAddressPools"), ids("httpListeners"), ids("backendHttpSettingsCollection")
	priorities := map[float64]string{}
	for i, r := range List(props["requestRoutingRules"]) {
		where := fmt.Sprintf("properties.requestRoutingRules[%d]", i)
		rp := Obj(r["properties"])
		switch Str(rp["ruleType"]) {
		case "Basic", "PathBasedRouting":
		default:
			return "InvalidRequestFormat", where + ".properties.ruleType must be Basic or PathBasedRouting"
		}
		prio, ok := Num(rp["priority"])
		if !ok || prio < 1 || prio > 20000 {
			return "ApplicationGatewayRequestRoutingRulePriorityCannotBeEmpty", where + ".properties.priority must be 1 to 20000"
		}
		if other, dup := priorities[prio]; dup {
			return "ApplicationGatewayRequestRoutingRulePriorityAlreadyExists", where + " has the priority of " + other
		}
		priorities[prio] = Str(r["name"])
		if !listeners[strings.ToLower(Str(Obj(rp["httpListener"])["id"]))] {
			return "InvalidResourceReference", where + ".properties.httpListener.id references no listener of the gateway"
		}
		if Str(rp["ruleType"]) == "Basic" {
			if !pools[strings.ToLower(Str(Obj(rp["backendAddressPool"])["id"]))] {
				return "InvalidResourceReference", where + ".properties.backendAddressPool.id references no backend pool of the gateway"
			}
			if !settings[strings.ToLower(Str(Obj(rp["backendHttpSettings"])["id"]))] {
				return "InvalidResourceReference", where + ".properties.backendHttpSettings.id references no backend settings of the gateway"
			}
		}
	}
	return "", ""
}

// AFDOriginRules checks a Front Door origin written (PATCH merged into
// what is stored, or PUT).
func AFDOriginRules(old, next Resource) (string, string) {
	p := Obj(next["properties"])
	if Str(p["hostName"]) == "" {
		return "BadRequest", "properties.hostName is required"
	}
	if w, ok := p["weight"]; ok {
		if n, ok := Num(w); !ok || n < 1 || n > 1000 || n != float64(int(n)) {
			return "BadRequest", fmt.Sprintf("properties.weight must be an integer from 1 to 1000, got %v", w)
		}
	}
	if pr, ok := p["priority"]; ok {
		if n, ok := Num(pr); !ok || n < 1 || n > 5 {
			return "BadRequest", fmt.Sprintf("properties.priority must be 1 to 5, got %v", pr)
		}
	}
	if s, ok := p["enabledState"]; ok && s != "Enabled" && s != "Disabled" {
		return "BadRequest", fmt.Sprintf("properties.enabledState must be Enabled or Disabled, got %v", s)
	}
	return "", ""
}

// IdentityHeader is the secret the stand-in's managed identity endpoint
// wants in X-IDENTITY-HEADER.
const IdentityHeader = "standin-identity-header"

// NewIdentityEndpoint starts an App Service managed identity endpoint on
// 127.0.0.1, as Azure runs one beside an application: with
// IDENTITY_ENDPOINT set to its URL and IDENTITY_HEADER to IdentityHeader,
// DefaultAzureCredential takes its tokens from it. It answers 401 to a
// request without the header.
func NewIdentityEndpoint() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-IDENTITY-HEADER") != IdentityHeader || r.URL.Query().Get("resource") == "" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"standin-msi-token","expires_on":"%d","resource":%q,"token_type":"Bearer"}`,
			time.Now().Add(time.Hour).Unix(), r.URL.Query().Get("resource"))
	}))
}
