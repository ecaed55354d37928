package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/internal/tlstest"
)

// TestSlotProtocolAndTLS: protocol and tls parse (tls paths are the
// configuration file's), default to http1, and wrong values are refused
// naming their key.
func TestSlotProtocolAndTLS(t *testing.T) {
	dir := t.TempDir()
	text := strings.Replace(valid, "    instances: [127.0.0.1:9001, 127.0.0.1:9002]\n",
		"    instances: [127.0.0.1:9001, 127.0.0.1:9002]\n    protocol: h2\n    tls: {ca: certs/ca.pem, server_name: app.internal}\n", 1)
	path := filepath.Join(dir, "vipswap.yaml")
	os.WriteFile(path, []byte(text), 0o600)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Slots["blue"]; b.Protocol != ProtocolH2 || b.TLS.CA != filepath.Join(dir, "certs/ca.pem") || b.TLS.ServerName != "app.internal" {
		t.Fatalf("blue: %+v %+v", b, b.TLS)
	}
	if g := c.Slots["green"]; g.Protocol != ProtocolHTTP1 || g.TLS != nil || c.Health.Type != HealthHTTP {
		t.Fatalf("green: %+v, health %q: want http1 without TLS, health http", g, c.Health.Type)
	}
	blue := "    instances: [127.0.0.1:9001, 127.0.0.1:9002]\n"
	for _, c := range []struct{ from, to, want string }{
		{blue, blue + "    protocol: http3\n", `slots.blue.protocol: want http1, h2c or h2, got "http3"`},
		{blue, blue + "    protocol: h2c\n    tls: {ca: ca.pem}\n", "slots.blue.tls: protocol h2c is cleartext"},
		{blue, blue + "    tls: {cert: c.pem}\n", "slots.blue.tls: want both cert"},
		{blue, blue + "    tls: {sni: x}\n", "slots.blue.tls.sni: unknown key"},
		{"  interval: 500ms\n", "  interval: 500ms\n  type: tcp\n", `health.type: want http or grpc, got "tcp"`},
		{"  interval: 500ms\n", "  interval: 500ms\n  type: grpc\n", "slots.blue.protocol: health.type grpc needs protocol h2c or h2"},
	} {
		_, err := Parse("t.yaml", []byte(strings.Replace(valid, c.from, c.to, 1)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.to, err, c.want)
		}
	}
}

// TestLoadUpstreamTLS: a slot's TLS files are read with a one-line reason
// naming the key when they are wrong; h2 without tls uses the system's
// roots; the fingerprint follows the files' contents.
func TestLoadUpstreamTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.Valid(t, dir, "app.internal")
	client := tlstest.Valid(t, dir, "client")
	other := tlstest.Valid(t, dir, "other")
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not PEM"), 0o600)

	u, err := LoadUpstreamTLS("slots.blue", Slot{Protocol: ProtocolHTTP1, TLS: &SlotTLS{CA: ca.CertFile, ServerName: "app.internal", Cert: client.CertFile, Key: client.KeyFile}})
	if err != nil || u.Config.RootCAs == nil || len(u.Config.Certificates) != 1 || u.Config.ServerName != "app.internal" {
		t.Fatalf("good files: %v %+v", err, u)
	}
	if u, err := LoadUpstreamTLS("slots.blue", Slot{Protocol: ProtocolH2}); err != nil || u == nil || u.Config.RootCAs != nil {
		t.Fatalf("h2 without tls: %v %+v, want the system's roots", err, u)
	}
	if u, err := LoadUpstreamTLS("slots.blue", Slot{Protocol: ProtocolH2C}); err != nil || u != nil {
		t.Fatalf("h2c: %v %+v, want no TLS", err, u)
	}
	for _, c := range []struct {
		tls  SlotTLS
		want string
	}{
		{SlotTLS{CA: filepath.Join(dir, "nope.pem")}, "slots.blue.tls.ca: stat "},
		{SlotTLS{CA: garbage}, "slots.blue.tls.ca: " + garbage + " holds no PEM certificate"},
		{SlotTLS{CA: "/dev/zero"}, "want a regular file"},
		{SlotTLS{Cert: client.CertFile}, "slots.blue.tls: want both cert"},
		{SlotTLS{Cert: client.CertFile, Key: other.KeyFile}, "slots.blue.tls: " + client.CertFile + " and " + other.KeyFile + ": tls: private key does not match public key"},
		{SlotTLS{Cert: client.CertFile, Key: filepath.Join(dir, "nope.key")}, "slots.blue.tls.key: stat "},
	} {
		_, err := LoadUpstreamTLS("slots.blue", Slot{Protocol: ProtocolHTTP1, TLS: &c.tls})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: got %v, want one line with %q", c.tls, err, c.want)
		}
	}
	a, _ := LoadUpstreamTLS("slots.blue", Slot{Protocol: ProtocolHTTP1, TLS: &SlotTLS{CA: ca.CertFile}})
	b, _ := LoadUpstreamTLS("slots.blue", Slot{Protocol: ProtocolHTTP1, TLS: &SlotTLS{CA: ca.CertFile}})
	if a.Fingerprint != b.Fingerprint {
		t.Error("the same files gave two fingerprints")
	}
	os.WriteFile(ca.CertFile, mustRead(t, other.CertFile), 0o600)
	if c, _ := LoadUpstreamTLS("slots.blue", Slot{Protocol: ProtocolHTTP1, TLS: &SlotTLS{CA: ca.CertFile}}); c.Fingerprint == a.Fingerprint {
		t.Error("a rewritten CA file kept its fingerprint")
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHAProxyRefusesSlotTLSAndHTTP2: the HAProxy driver adds cleartext
// HTTP/1.1 servers, so a slot with protocol h2c/h2 or tls is refused with
// it, on one line naming the slot.
func TestHAProxyRefusesSlotTLSAndHTTP2(t *testing.T) {
	blue := "    instances: [127.0.0.1:9001, 127.0.0.1:9002]\n"
	for _, extra := range []string{"    protocol: h2c\n", "    tls: {server_name: app.internal}\n"} {
		text := strings.Replace(valid, blue, blue+extra, 1) + "haproxy: {socket: /run/h.sock, maps: {prod: /p.map, stage: /s.map}}\n"
		_, err := Parse("t.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), "slots.blue: protocol h2c or h2, or tls, is not supported with the HAProxy driver") {
			t.Errorf("%q: got %v", extra, err)
		}
	}
}
