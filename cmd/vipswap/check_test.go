package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
)

// TestCheckRefusesBadCertificates: vipswap check reads a TLS listener's
// certificates as serve would, and names the one it refuses on one line.
func TestCheckRefusesBadCertificates(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	tlstest.Valid(t, dir, "good.example")
	tlstest.New(t, dir, "old.example", now.Add(-2*time.Hour), now.Add(-time.Hour))
	write := func(cert string) string {
		path := filepath.Join(dir, "vipswap.yaml")
		text := `listeners:
  prod:
    addr: 127.0.0.1:8443
    tls:
      certs:
        - {cert: ` + cert + `.crt, key: ` + cert + `.key}
  stage: 127.0.0.1:8081
slots:
  blue: {instances: [127.0.0.1:9001]}
  green: {instances: [127.0.0.1:9002]}
`
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var out strings.Builder
	if err := checkConfig(&out, write("good.example")); err != nil || !strings.Contains(out.String(), "prod 127.0.0.1:8443 (TLS)") {
		t.Fatalf("check with a good certificate: %v\n%s", err, out.String())
	}
	err := checkConfig(io.Discard, write("old.example"))
	if err == nil || !strings.Contains(err.Error(), "listeners.prod.tls.certs[0]:") || !strings.Contains(err.Error(), "expired on") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("check with an expired certificate: %v; want one line naming it", err)
	}
}

// TestCheckACME: vipswap check accepts an acme block alone, and refuses a
// bad one (here a name, and a ca_root that is no PEM file) in one line
// naming the key.
func TestCheckACME(t *testing.T) {
	dir := t.TempDir()
	write := func(acme string) string {
		path := filepath.Join(dir, "vipswap.yaml")
		text := `listeners:
  prod:
    addr: 127.0.0.1:8443
    tls:
      acme: ` + acme + `
  stage: 127.0.0.1:8081
slots:
  blue: {instances: [127.0.0.1:9001]}
  green: {instances: [127.0.0.1:9002]}
`
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var out strings.Builder
	if err := checkConfig(&out, write("{email: ops@example.com, names: [www.example.com]}")); err != nil || !strings.Contains(out.String(), "prod 127.0.0.1:8443 (TLS, ACME for www.example.com)") {
		t.Fatalf("a good acme block: %v\n%s", err, out.String())
	}
	os.WriteFile(filepath.Join(dir, "root.pem"), []byte("not PEM"), 0o600)
	for block, want := range map[string]string{
		"{email: ops@example.com, names: ['*.example.com']}":                    "listeners.prod.tls.acme.names[0]: \"*.example.com\": a wildcard needs the DNS-01 challenge",
		"{email: ops@example.com, ca_root: root.pem, names: [www.example.com]}": "listeners.prod.tls.acme.ca_root: " + filepath.Join(dir, "root.pem") + " holds no PEM certificate",
	} {
		err := checkConfig(io.Discard, write(block))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one line with %q", block, err, want)
		}
	}
}

// TestCheckRefusesBadSlotTLS: vipswap check reads a slot's TLS files (CA,
// client certificate) as serve would, and names what it refuses on one
// line.
func TestCheckRefusesBadSlotTLS(t *testing.T) {
	dir := t.TempDir()
	tlstest.Valid(t, dir, "ca.example")
	tlstest.Valid(t, dir, "client.example")
	tlstest.Valid(t, dir, "other.example")
	write := func(tls string) string {
		path := filepath.Join(dir, "vipswap.yaml")
		text := "slots:\n  blue:\n    instances: [127.0.0.1:9001]\n    tls: " + tls + "\n  green: {instances: [127.0.0.1:9002]}\n"
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var out strings.Builder
	if err := checkConfig(&out, write("{ca: ca.example.crt, server_name: app.internal, cert: client.example.crt, key: client.example.key}")); err != nil || !strings.Contains(out.String(), "blue (1 instances, HTTPS)") {
		t.Fatalf("good files: %v\n%s", err, out.String())
	}
	for _, c := range []struct{ tls, want string }{
		{"{ca: missing.crt}", "slots.blue.tls.ca: stat "},
		{"{ca: client.example.key}", "holds no PEM certificate"},
		{"{cert: client.example.crt, key: other.example.key}", "slots.blue.tls: "},
		{"{cert: client.example.crt}", "slots.blue.tls: want both cert"},
	} {
		err := checkConfig(io.Discard, write(c.tls))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one line with %q", c.tls, err, c.want)
		}
	}
}
