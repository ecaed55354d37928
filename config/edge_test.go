package config

import (
	"strings"
	"testing"
)

// edgeConfig is valid with listeners (and admin) given as mappings.
func edgeConfig(prod, stage, admin string) string {
	src := strings.Replace(valid, "  prod: 127.0.0.1:8080\n  stage: 127.0.0.1:8081\n", "  prod:\n"+prod+"  stage:\n"+stage, 1)
	return strings.Replace(src, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n"+admin, 1)
}

const tlsProd = "    addr: 127.0.0.1:8443\n    tls: {certs: [{cert: a.crt, key: a.key}]}\n"

func TestEdgeKeys(t *testing.T) {
	src := edgeConfig(tlsProd+"    proxy_protocol: require\n    proxy_protocol_from: [10.0.0.0/8, 192.0.2.7, \"2001:db8::/32\"]\n",
		"    addr: 127.0.0.1:8080\n    redirect_to: prod\n    proxy_protocol: accept\n",
		"  tls: {certs: [{cert: admin.crt, key: admin.key}]}\n")
	c, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Listeners.Prod.ProxyProtocolPeers(); len(got) != 3 || got[1].String() != "192.0.2.7/32" {
		t.Errorf("peers %v", got)
	}
	if got := c.Listeners.Stage.ProxyProtocolPeers(); len(got) != 2 || got[0].String() != "127.0.0.0/8" {
		t.Errorf("default peers %v, want loopback", got)
	}
	if c.Listeners.Stage.RedirectTo != "prod" || c.Admin.TLS == nil || c.Listeners.Prod.ProxyProtocol != "require" {
		t.Errorf("decoded %+v %+v", c.Listeners, c.Admin)
	}
	for _, tc := range []struct{ prod, stage, admin, want string }{
		{tlsProd + "    proxy_protocol: maybe\n", "    addr: 127.0.0.1:8080\n", "", `listeners.prod.proxy_protocol: want off, accept or require, got "maybe"`},
		{tlsProd + "    proxy_protocol_from: [10.0.0.0/33]\n", "    addr: 127.0.0.1:8080\n", "", "listeners.prod.proxy_protocol_from[0]: want an address or a CIDR prefix"},
		{tlsProd, "    addr: 127.0.0.1:8080\n    redirect_to: stage\n", "", "listeners.stage is not a TLS listener"},
		{tlsProd, "    addr: 127.0.0.1:8080\n    redirect_to: admin\n", "", `want the name of a TLS listener (prod or stage), got "admin"`},
		{tlsProd + "    redirect_to: prod\n", "    addr: 127.0.0.1:8080\n", "", "a TLS listener cannot redirect"},
		{tlsProd, "    addr: 127.0.0.1:8080\n", "  tls: {certs: [{cert: admin.crt}]}\n", "admin.tls.certs[0]: want both cert"},
		{tlsProd, "    addr: 127.0.0.1:8080\n", "  tls: {}\n", "admin.tls.certs: want at least one"},
	} {
		_, err := Parse("test.yaml", []byte(edgeConfig(tc.prod, tc.stage, tc.admin)))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("want one line with %q, got %v", tc.want, err)
		}
	}
}

// TestEdgeDiff: the listeners' new keys take a restart; the admin API's
// certificates a reload re-reads, turning its TLS on or off takes a
// restart.
func TestEdgeDiff(t *testing.T) {
	parse := func(src string) *Config {
		c, err := Parse("test.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	plain := parse(edgeConfig(tlsProd, "    addr: 127.0.0.1:8080\n", ""))
	for _, tc := range []struct {
		next    *Config
		restart bool
	}{
		{parse(edgeConfig(tlsProd+"    proxy_protocol: accept\n", "    addr: 127.0.0.1:8080\n", "")), true},
		{parse(edgeConfig(tlsProd, "    addr: 127.0.0.1:8080\n    redirect_to: prod\n", "")), true},
		{parse(edgeConfig(tlsProd, "    addr: 127.0.0.1:8080\n", "  tls: {certs: [{cert: a.crt, key: a.key}]}\n")), true},
	} {
		d := plain.Compare(tc.next)
		if len(d.Changes) == 0 || (len(d.Restart) > 0) != tc.restart {
			t.Errorf("diff %+v, want restart=%v", d, tc.restart)
		}
	}
	withAdmin := parse(edgeConfig(tlsProd, "    addr: 127.0.0.1:8080\n", "  tls: {certs: [{cert: a.crt, key: a.key}]}\n"))
	other := parse(edgeConfig(tlsProd, "    addr: 127.0.0.1:8080\n", "  tls: {certs: [{cert: b.crt, key: b.key}]}\n"))
	if d := withAdmin.Compare(other); len(d.Changes) == 0 || len(d.Restart) > 0 {
		t.Errorf("admin certificates changed: %+v, want a change a reload applies", d)
	}
}

// TestSlotProxyProtocol: a slot's proxy_protocol is off, v1 or v2; a
// reload may change it.
func TestSlotProxyProtocol(t *testing.T) {
	src := strings.Replace(valid, "    instances: [127.0.0.1:9001, 127.0.0.1:9002]\n", "    instances: [127.0.0.1:9001, 127.0.0.1:9002]\n    proxy_protocol: v2\n", 1)
	c, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.Slots["blue"].ProxyProtocolVersion() != 2 || c.Slots["green"].ProxyProtocolVersion() != 0 {
		t.Fatalf("versions %d %d", c.Slots["blue"].ProxyProtocolVersion(), c.Slots["green"].ProxyProtocolVersion())
	}
	old, _ := Parse("test.yaml", []byte(valid))
	if d := old.Compare(c); len(d.Restart) > 0 || !strings.Contains(strings.Join(d.Changes, "\n"), `slots.blue.proxy_protocol: "" → v2`) {
		t.Errorf("diff %+v", d)
	}
	bad := strings.Replace(src, "proxy_protocol: v2", "proxy_protocol: v3", 1)
	if _, err := Parse("test.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), `slots.blue.proxy_protocol: want off, v1 or v2, got "v3"`) {
		t.Errorf("v3: %v", err)
	}
}
