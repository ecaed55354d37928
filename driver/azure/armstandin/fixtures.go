package armstandin

import "fmt"

// Sub is the subscription the fixtures live in.
const Sub = "00000000-0000-0000-0000-000000000000"

// LBPath is the ARM path of load balancer name in resource group rg.
func LBPath(rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/loadBalancers/%s", Sub, rg, name)
}

// LoadBalancer returns a load balancer as a VM scale set VIP swap sets it
// up: a prod rule on port 80 whose probe http-probe asks for prodPath, a
// stage rule on 40080 whose probe http-probe-stage asks for stagePath,
// and the tag ActiveSlot.
func LoadBalancer(rg, name, prodPath, stagePath, active string) Resource {
	id := LBPath(rg, name)
	probe := func(n, path string) map[string]any {
		return map[string]any{"name": n, "id": id + "/probes/" + n, "properties": map[string]any{
			"protocol": "Http", "port": 80.0, "requestPath": path, "intervalInSeconds": 5.0, "numberOfProbes": 2.0,
		}}
	}
	rule := func(n string, port float64, probeName string) map[string]any {
		return map[string]any{"name": n, "id": id + "/loadBalancingRules/" + n, "properties": map[string]any{
			"frontendPort": port, "backendPort": 80.0, "protocol": "Tcp",
			"frontendIPConfiguration": map[string]any{"id": id + "/frontendIPConfigurations/LoadBalancerFrontEnd"},
			"backendAddressPool":      map[string]any{"id": id + "/backendAddressPools/bepool"},
			"probe":                   map[string]any{"id": id + "/probes/" + probeName},
		}}
	}
	return Resource{
		"name": name, "type": "Microsoft.Network/loadBalancers", "location": "westeurope",
		"sku":  map[string]any{"name": "Standard"},
		"tags": map[string]any{"ActiveSlot": active},
		"properties": map[string]any{
			"provisioningState": "Succeeded",
			"frontendIPConfigurations": []any{map[string]any{"name": "LoadBalancerFrontEnd", "id": id + "/frontendIPConfigurations/LoadBalancerFrontEnd",
				"properties": map[string]any{"publicIPAddress": map[string]any{"id": "/subscriptions/" + Sub + "/resourceGroups/" + rg + "/providers/Microsoft.Network/publicIPAddresses/vip"}}}},
			"backendAddressPools": []any{map[string]any{"name": "bepool", "id": id + "/backendAddressPools/bepool"}},
			"probes":              []any{probe("http-probe", prodPath), probe("http-probe-stage", stagePath)},
			"loadBalancingRules":  []any{rule("http-rule", 80, "http-probe"), rule("http-rule-stage", 40080, "http-probe-stage")},
		},
	}
}

// AppGWPath is the ARM path of application gateway name in rg.
func AppGWPath(rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/applicationGateways/%s", Sub, rg, name)
}

// AppGateway returns an application gateway with one backend pool per
// pools entry (name -> addresses), a listener per rule, and rules (rule
// name -> the pool it sends to).
func AppGateway(rg, name string, pools map[string][]string, rules map[string]string) Resource {
	id := AppGWPath(rg, name)
	var ps, ls, rs []any
	for pool, addrs := range pools {
		var as []any
		for _, a := range addrs {
			as = append(as, map[string]any{"ipAddress": a})
		}
		ps = append(ps, map[string]any{"name": pool, "id": id + "/backendAddressPools/" + pool, "properties": map[string]any{"backendAddresses": as}})
	}
	prio := 100.0
	for rule, pool := range rules {
		ls = append(ls, map[string]any{"name": rule + "-listener", "id": id + "/httpListeners/" + rule + "-listener", "properties": map[string]any{"protocol": "Http"}})
		rs = append(rs, map[string]any{"name": rule, "id": id + "/requestRoutingRules/" + rule, "properties": map[string]any{
			"ruleType":            "Basic",
			"priority":            prio,
			"httpListener":        map[string]any{"id": id + "/httpListeners/" + rule + "-listener"},
			"backendAddressPool":  map[string]any{"id": id + "/backendAddressPools/" + pool},
			"backendHttpSettings": map[string]any{"id": id + "/backendHttpSettingsCollection/http"},
		}})
		prio += 10
	}
	return Resource{
		"name": name, "type": "Microsoft.Network/applicationGateways", "location": "westeurope",
		"properties": map[string]any{
			"provisioningState":             "Succeeded",
			"sku":                           map[string]any{"name": "Standard_v2", "tier": "Standard_v2", "capacity": 2.0},
			"backendAddressPools":           ps,
			"backendHttpSettingsCollection": []any{map[string]any{"name": "http", "id": id + "/backendHttpSettingsCollection/http", "properties": map[string]any{"port": 80.0, "protocol": "Http"}}},
			"httpListeners":                 ls,
			"requestRoutingRules":           rs,
		},
	}
}

// OriginPath is the ARM path of Front Door origin name in origin group
// group of profile.
func OriginPath(rg, profile, group, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Cdn/profiles/%s/originGroups/%s/origins/%s", Sub, rg, profile, group, name)
}

// Origin returns a Front Door origin.
func Origin(name, host string, weight int, enabled bool) Resource {
	state := "Enabled"
	if !enabled {
		state = "Disabled"
	}
	return Resource{"name": name, "type": "Microsoft.Cdn/profiles/originGroups/origins", "properties": map[string]any{
		"hostName": host, "httpPort": 80.0, "httpsPort": 443.0, "originHostHeader": host,
		"priority": 1.0, "weight": float64(weight), "enabledState": state, "provisioningState": "Succeeded",
	}}
}
