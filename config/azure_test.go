package config

import (
	"strings"
	"testing"
	"time"
)

// TestAzureBlocks: each Azure block's defaults, and a clear error naming
// the key for each thing wrong.
func TestAzureBlocks(t *testing.T) {
	base := "listeners: {prod: 127.0.0.1:18080, stage: 127.0.0.1:18081}\nslots:\n  blue: {instances: [127.0.0.1:19001]}\n  green: {instances: [127.0.0.1:19002]}\n"
	const res = "subscription: 6f1d3c8e-0b7a-4c1e-9d2f-1a2b3c4d5e6f, resource_group: vmsstf-rg"
	lb := "azure_lb: {" + res + ", name: api-prod-vmss-lb, probes: {prod: http-probe, stage: http-probe-stage}, paths: {blue: '/api/ping?slot=slot0', green: '/api/ping?slot=slot1'}, tag_values: {blue: '0', green: '1'}, confirm: {url: 'http://20.1.2.3/api/test'}}"
	c, err := Parse("t.yaml", []byte(base+lb+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	a := c.AzureLB
	if a.Tag != "ActiveSlot" || a.PollEvery != 2*time.Second || a.OperationTimeout != 5*time.Minute ||
		a.Confirm.Window != 10 || a.Confirm.Deadline != 2*time.Minute || a.Subscription == "" || a.ResourceGroup != "vmsstf-rg" {
		t.Fatalf("azure_lb defaults: %+v", a)
	}
	gw := "azure_appgw: {" + res + ", name: gw, rules: {prod: rule-prod}, pools: {blue: pool-blue, green: pool-green}}"
	if c, err := Parse("t.yaml", []byte(base+gw+"\n")); err != nil || c.AzureAppGW.Health != "vipswap" || c.AzureAppGW.HealthEvery != 30*time.Second {
		t.Fatalf("azure_appgw: %v", err)
	}
	fd := "azure_frontdoor: {" + res + ", profile: fd, origin_group: api, origins: {blue: [unit1], green: [unit2a, unit2b]}}"
	if _, err := Parse("t.yaml", []byte(base+fd+"\n")); err != nil {
		t.Fatalf("azure_frontdoor: %v", err)
	}
	for _, tc := range []struct{ block, want string }{
		{strings.Replace(lb, "6f1d3c8e-0b7a-4c1e-9d2f-1a2b3c4d5e6f", "my-sub", 1), "azure_lb.subscription"},
		{strings.Replace(lb, "vmsstf-rg", "'rg with space'", 1), "azure_lb.resource_group"},
		{strings.Replace(lb, "probes: {prod: http-probe, stage: http-probe-stage}", "probes: {prod: p, stage: p}", 1), "azure_lb.probes"},
		{strings.Replace(lb, ", green: '/api/ping?slot=slot1'}", "}", 1), "green has none"},
		{strings.Replace(lb, "'/api/ping?slot=slot1'", "'/api/ping?slot=slot0'", 1), "share the probe path"},
		{strings.Replace(lb, "'/api/ping?slot=slot1'", "'api/ping'", 1), "azure_lb.paths.green"},
		{strings.Replace(lb, "green: '1'", "purple: '1'", 1), "azure_lb.tag_values.purple"},
		{strings.Replace(lb, "http://20.1.2.3/api/test", "20.1.2.3", 1), "azure_lb.confirm.url"},
		{lb[:len(lb)-1] + ", poll_every: 100ms}", "azure_lb.poll_every"},
		{lb[:len(lb)-1] + ", endpoint: 'http://arm.local'}", "azure_lb.endpoint"},
		{lb[:len(lb)-1] + ", probs: x}", "probs"},
		{strings.Replace(gw, "pool-green", "pool-blue", 1), "share the backend pool"},
		{strings.Replace(gw, "rules: {prod: rule-prod}", "rules: {stage: rule-stage}", 1), "azure_appgw.rules"},
		{gw[:len(gw)-1] + ", health: both}", "azure_appgw.health"},
		{strings.Replace(fd, "green: [unit2a, unit2b]", "green: [unit1]", 1), "also blue's"},
		{strings.Replace(fd, ", green: [unit2a, unit2b]", "", 1), "green has none"},
		{lb + "\n" + fd, "not azure_lb and azure_frontdoor"},
		{strings.Replace(lb, "confirm: {url: 'http://20.1.2.3/api/test'}", "confirm: {url: 'http://20.1.2.3/api/test', answers: {blue: ok, green: ok}}", 1), "azure_lb.confirm.answers.green"},
		{strings.Replace(lb, "confirm: {url: 'http://20.1.2.3/api/test'}", "confirm: {url: 'http://20.1.2.3/api/test', answers: {blue: green}}", 1), "share the answer"},
		{strings.Replace(lb, "confirm: {url: 'http://20.1.2.3/api/test'}", "confirm: {url: 'http://20.1.2.3/api/test', answers: {blue: ' '}}", 1), "azure_lb.confirm.answers.blue"},
		{strings.Replace(lb, "green: '1'", "green: '0'", 1), "share the tag value"},
		{strings.Replace(lb, "tag_values: {blue: '0', green: '1'}", "tag_values: {blue: green}", 1), "share the tag value"},
		{lb[:len(lb)-1] + ", endpoint: 'https://user:secret@arm.local'}", "azure_lb.endpoint"},
		// What a dry run prints in an az command to paste cannot run code.
		{strings.Replace(lb, "'/api/ping?slot=slot1'", "'/api/ping?slot=$(id)'", 1), "azure_lb.paths.green"},
		{strings.Replace(lb, "'/api/ping?slot=slot1'", `'/api/ping?slot="x'`, 1), "azure_lb.paths.green"},
		{strings.Replace(lb, "green: '1'", "green: '1`id`'", 1), "azure_lb.tag_values.green"},
		{strings.Replace(lb, "green: '1'", `green: '1" && id && "'`, 1), "azure_lb.tag_values.green"},
		{lb[:len(lb)-1] + ", tag: 'Active$Slot'}", "azure_lb.tag"},
		{strings.Replace(lb, "prod: http-probe,", "prod: 'http-probe; id',", 1), "azure_lb.probes.prod"},
		{strings.Replace(gw, "rules: {prod: rule-prod}", "rules: {prod: 'rule-prod && id'}", 1), "azure_appgw.rules.prod"},
		{strings.Replace(gw, "pool-green", "'pool-green;id'", 1), "azure_appgw.pools.green"},
		{lb[:len(lb)-1] + ", endpoint: 'https://arm.local/?api-version=1'}", "azure_lb.endpoint"},
	} {
		_, err := Parse("t.yaml", []byte(base+tc.block+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %s", tc.block, err, tc.want)
		}
	}
}

// TestAzureBlockNeedsRestart: a reload cannot change which Azure
// resource vipswap drives.
func TestAzureBlockNeedsRestart(t *testing.T) {
	base := "listeners: {prod: 127.0.0.1:18080, stage: 127.0.0.1:18081}\nslots:\n  blue: {instances: [127.0.0.1:19001]}\n  green: {instances: [127.0.0.1:19002]}\n"
	lb := "azure_lb: {subscription: 6f1d3c8e-0b7a-4c1e-9d2f-1a2b3c4d5e6f, resource_group: rg, name: NAME, probes: {prod: a, stage: b}, paths: {blue: /a, green: /b}}\n"
	a := mustParse(t, base+strings.Replace(lb, "NAME", "lb1", 1))
	b := mustParse(t, base+strings.Replace(lb, "NAME", "lb2", 1))
	if d := a.Compare(b); len(d.Restart) == 0 {
		t.Fatalf("changing azure_lb.name reloads without a restart: %+v", d)
	}
}
