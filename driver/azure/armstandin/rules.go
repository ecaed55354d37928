package armstandin

import (
	"context"
	"fmt"
	"math"
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

// The rules below are those Azure's REST API specification gives for the
// fields the drivers read and write, checked field by field against the
// OpenAPI files of azure-rest-api-specs: Microsoft.Network stable
// 2024-05-01 (loadBalancer.json, applicationGateway.json, network.json)
// and Microsoft.Cdn stable 2024-02-01 (afdx.json). A rule the service
// enforces beyond the specification is marked "service rule". Each refusal
// carries the error code ARM answers with.

// intField checks that key of obj, when present, is a JSON integer from
// lo to hi (the specification's int32 fields with their minimum and
// maximum); required makes its absence an error too. It returns what is
// wrong, or "".
func intField(obj map[string]any, key, where string, required bool, lo, hi float64) string {
	v, ok := obj[key]
	if !ok || v == nil {
		if required {
			return where + "." + key + " is required"
		}
		return ""
	}
	n, isNum := Num(v)
	if !isNum || n != math.Trunc(n) {
		return fmt.Sprintf("%s.%s must be an integer, got %v", where, key, v)
	}
	if n < lo || n > hi {
		return fmt.Sprintf("%s.%s must be %v to %v, got %v", where, key, lo, hi, v)
	}
	return ""
}

// maxInt32 is the largest value of the specification's int32 fields.
const maxInt32 = math.MaxInt32

// uniqueNames checks that the entries of a collection have names, unique
// without regard to case ("unique within the set of ... used by the
// load balancer/gateway").
func uniqueNames(list []map[string]any, where string) string {
	seen := map[string]bool{}
	for i, e := range list {
		n := strings.ToLower(Str(e["name"]))
		if n == "" {
			return fmt.Sprintf("%s[%d].name is required", where, i)
		}
		if seen[n] {
			return fmt.Sprintf("%s[%d].name %q is used twice", where, i, Str(e["name"]))
		}
		seen[n] = true
	}
	return ""
}

// LoadBalancerRules checks a load balancer written whole (PUT), as
// loadBalancer.json's LoadBalancer, Probe and LoadBalancingRule give it.
func LoadBalancerRules(old, next Resource) (string, string) {
	if Str(next["location"]) == "" { // service rule: network.json leaves it optional
		return "LocationRequired", "The location property is required for this definition."
	}
	if code, msg := tagRules(next); code != "" {
		return code, msg
	}
	props := Obj(next["properties"])
	if msg := uniqueNames(List(props["probes"]), "properties.probes"); msg != "" {
		return "InvalidRequestFormat", msg
	}
	probes := map[string]bool{}
	for i, p := range List(props["probes"]) {
		where := fmt.Sprintf("properties.probes[%d]", i)
		probes[strings.ToLower(Str(p["name"]))] = true
		pp := Obj(p["properties"])
		proto := Str(pp["protocol"])
		switch proto {
		case "Http", "Https":
			// The specification: "Path is required if a protocol is set
			// to http. Otherwise, it is not allowed"; the service asks
			// one of an Https probe too, and that it start with /.
			path := Str(pp["requestPath"])
			if path == "" || !strings.HasPrefix(path, "/") {
				return "InvalidProbeRequestPath", where + ": requestPath is required for protocol " + proto + " and must start with /"
			}
		case "Tcp":
			if v, ok := pp["requestPath"]; ok && v != nil {
				return "ProbeRequestPathNotAllowed", where + ": requestPath is not allowed for protocol Tcp"
			}
		case "":
			return "InvalidRequestFormat", where + ".properties.protocol is required"
		default:
			return "InvalidRequestFormat", where + ".properties.protocol must be Http, Https or Tcp, got " + fmt.Sprint(pp["protocol"])
		}
		for _, f := range []struct {
			key      string
			required bool
			lo, hi   float64
		}{
			{"port", true, 1, 65535},
			{"intervalInSeconds", false, 5, maxInt32},
			{"numberOfProbes", false, math.MinInt32, maxInt32},
			{"probeThreshold", false, math.MinInt32, maxInt32},
		} {
			if msg := intField(pp, f.key, where+".properties", f.required, f.lo, f.hi); msg != "" {
				return "InvalidRequestFormat", msg
			}
		}
		if s, ok := pp["noHealthyBackendsBehavior"]; ok && s != nil && s != "AllProbedDown" && s != "AllProbedUp" {
			return "InvalidRequestFormat", fmt.Sprintf("%s.properties.noHealthyBackendsBehavior must be AllProbedDown or AllProbedUp, got %v", where, s)
		}
	}
	rules := List(props["loadBalancingRules"])
	if msg := uniqueNames(rules, "properties.loadBalancingRules"); msg != "" {
		return "InvalidRequestFormat", msg
	}
	ports := map[string]string{}
	for i, r := range rules {
		where := fmt.Sprintf("properties.loadBalancingRules[%d]", i)
		rp := Obj(r["properties"])
		switch Str(rp["protocol"]) {
		case "Tcp", "Udp", "All":
		case "":
			return "InvalidRequestFormat", where + ".properties.protocol is required"
		default:
			return "InvalidRequestFormat", where + ".properties.protocol must be Tcp, Udp or All, got " + fmt.Sprint(rp["protocol"])
		}
		if msg := intField(rp, "frontendPort", where+".properties", true, 0, 65534); msg != "" {
			return "InvalidRequestFormat", msg
		}
		if msg := intField(rp, "backendPort", where+".properties", false, 0, 65535); msg != "" {
			return "InvalidRequestFormat", msg
		}
		if msg := intField(rp, "idleTimeoutInMinutes", where+".properties", false, 4, 30); msg != "" {
			return "InvalidRequestFormat", msg
		}
		// "Port numbers for each rule must be unique within the Load
		// Balancer": two rules may not take one frontend port of one
		// frontend for the same protocol (All takes both).
		fe := strings.ToLower(Str(Obj(rp["frontendIPConfiguration"])["id"]))
		port, _ := Num(rp["frontendPort"])
		for _, proto := range protocols(Str(rp["protocol"])) {
			k := fmt.Sprintf("%s|%s|%v", fe, proto, port)
			if other, dup := ports[k]; dup {
				return "InvalidRequestFormat", fmt.Sprintf("%s takes frontend port %v, which %s has", where, port, other)
			}
			ports[k] = Str(r["name"])
		}
		id := Str(Obj(rp["probe"])["id"])
		if id != "" && !probes[strings.ToLower(id[strings.LastIndex(id, "/")+1:])] {
			return "InvalidResourceReference", fmt.Sprintf("%s references probe %s, which is not in the load balancer", where, id)
		}
	}
	return "", ""
}

// protocols is what a load-balancing rule's protocol takes of a port.
func protocols(p string) []string {
	if p == "All" {
		return []string{"Tcp", "Udp"}
	}
	return []string{p}
}

// tagRules checks tags: names at most 512 characters, values at most 256,
// no more than 50 (service rules; the specification gives tags as a map
// of strings).
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

// AppGatewayRules checks an application gateway written whole (PUT), as
// applicationGateway.json's ApplicationGatewayRequestRoutingRule gives it.
func AppGatewayRules(old, next Resource) (string, string) {
	if Str(next["location"]) == "" { // service rule
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
	pools, listeners, settings, pathMaps := ids("backendAddressPools"), ids("httpListeners"), ids("backendHttpSettingsCollection"), ids("urlPathMaps")
	// Service rule: a v2 gateway's rules must carry a priority (the
	// specification leaves it optional, bounded 1 to 20000).
	tier := Str(Obj(props["sku"])["tier"])
	v2 := tier == "Standard_v2" || tier == "WAF_v2"
	rules := List(props["requestRoutingRules"])
	if msg := uniqueNames(rules, "properties.requestRoutingRules"); msg != "" {
		return "InvalidRequestFormat", msg
	}
	priorities := map[float64]string{}
	for i, r := range rules {
		where := fmt.Sprintf("properties.requestRoutingRules[%d]", i)
		rp := Obj(r["properties"])
		ruleType := Str(rp["ruleType"])
		switch ruleType {
		case "Basic", "PathBasedRouting":
		default:
			return "InvalidRequestFormat", where + ".properties.ruleType must be Basic or PathBasedRouting, got " + fmt.Sprint(rp["ruleType"])
		}
		if p, ok := rp["priority"]; !ok || p == nil {
			if v2 {
				return "ApplicationGatewayRequestRoutingRulePriorityCannotBeEmpty", where + ".properties.priority is required on a " + tier + " gateway"
			}
		} else {
			if msg := intField(rp, "priority", where+".properties", false, 1, 20000); msg != "" {
				return "InvalidRequestFormat", msg
			}
			prio, _ := Num(p)
			if other, dup := priorities[prio]; dup {
				return "ApplicationGatewayRequestRoutingRulePriorityAlreadyExists", where + " has the priority of " + other
			}
			priorities[prio] = Str(r["name"])
		}
		if !listeners[strings.ToLower(Str(Obj(rp["httpListener"])["id"]))] {
			return "InvalidResourceReference", where + ".properties.httpListener.id references no listener of the gateway"
		}
		switch ruleType {
		case "Basic":
			if !pools[strings.ToLower(Str(Obj(rp["backendAddressPool"])["id"]))] {
				return "InvalidResourceReference", where + ".properties.backendAddressPool.id references no backend pool of the gateway"
			}
			if !settings[strings.ToLower(Str(Obj(rp["backendHttpSettings"])["id"]))] {
				return "InvalidResourceReference", where + ".properties.backendHttpSettings.id references no backend settings of the gateway"
			}
		case "PathBasedRouting":
			if !pathMaps[strings.ToLower(Str(Obj(rp["urlPathMap"])["id"]))] {
				return "InvalidResourceReference", where + ".properties.urlPathMap.id references no URL path map of the gateway"
			}
		}
	}
	return "", ""
}

// AFDOriginRules checks a Front Door origin written (PATCH merged into
// what is stored, or PUT), as afdx.json's AFDOriginProperties gives it.
func AFDOriginRules(old, next Resource) (string, string) {
	p := Obj(next["properties"])
	if Str(p["hostName"]) == "" {
		return "BadRequest", "properties.hostName is required"
	}
	for _, f := range []struct {
		key    string
		lo, hi float64
	}{{"weight", 1, 1000}, {"priority", 1, 5}, {"httpPort", 1, 65535}, {"httpsPort", 1, 65535}} {
		if msg := intField(p, f.key, "properties", false, f.lo, f.hi); msg != "" {
			return "BadRequest", msg
		}
	}
	if s, ok := p["enabledState"]; ok && s != nil && s != "Enabled" && s != "Disabled" {
		return "BadRequest", fmt.Sprintf("properties.enabledState must be Enabled or Disabled, got %v", s)
	}
	if b, ok := p["enforceCertificateNameCheck"]; ok && b != nil {
		if _, isBool := b.(bool); !isBool {
			return "BadRequest", fmt.Sprintf("properties.enforceCertificateNameCheck must be a boolean, got %v", b)
		}
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
