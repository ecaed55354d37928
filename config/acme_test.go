package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// acmeBlock is prod as a TLS listener with this acme block (flow style).
func acmeBlock(acme string) string {
	return strings.Replace(valid, "  prod: 127.0.0.1:8080\n",
		"  prod:\n    addr: 127.0.0.1:8443\n    tls:\n      acme: "+acme+"\n", 1)
}

// TestACMEBlock: an acme block alone makes a TLS listener; the default
// CA is Let's Encrypt's; ca_root is the configuration file's; every bad
// field is refused in one line naming its key.
func TestACMEBlock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(acmeBlock("{email: ops@example.com, ca_root: ca.pem, names: [www.example.com, Api.Example.com]}")), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Listeners.Prod.TLS.ACME
	if a.Directory() != LetsEncrypt || a.CARoot != filepath.Join(dir, "ca.pem") || len(a.Names) != 2 {
		t.Fatalf("acme %+v", a)
	}
	long := strings.Repeat("a", 64) + ".example.com"
	for _, c := range []struct{ block, want string }{
		{"{names: [www.example.com]}", "listeners.prod.tls.acme.email: want the ACME account's contact address"},
		{"{email: ops, names: [www.example.com]}", `listeners.prod.tls.acme.email: "ops" is not an email address`},
		{"{email: 'Ops <ops@example.com>', names: [www.example.com]}", "is not an email address"},
		{"{email: 'ops@example.com\\n', names: [www.example.com]}", "is not an email address"},
		{"{email: ops@-bad.com, names: [www.example.com]}", "is not an email address"},
		{"{email: ops@example.com, ca: 'http://acme.example/dir', names: [www.example.com]}", "listeners.prod.tls.acme.ca: \"http://acme.example/dir\": want an https:// URL"},
		{"{email: ops@example.com, ca: 'acme.example/dir', names: [www.example.com]}", "want an https:// URL"},
		{"{email: ops@example.com, ca: 'https:///dir', names: [www.example.com]}", "want a host"},
		{"{email: ops@example.com, ca: 'https://u:p@acme.example/dir', names: [www.example.com]}", "want no user or password"},
		{"{email: ops@example.com, ca: '%zz', names: [www.example.com]}", "not a URL"},
		{"{email: ops@example.com}", "listeners.prod.tls.acme.names: want at least one DNS name"},
		{"{email: ops@example.com, names: []}", "listeners.prod.tls.acme.names: want at least one DNS name"},
		{"{email: ops@example.com, names: [192.0.2.1]}", "listeners.prod.tls.acme.names[0]: \"192.0.2.1\": an IP address"},
		{"{email: ops@example.com, names: ['[::1]']}", "an IP address"},
		{"{email: ops@example.com, names: ['*.example.com']}", "a wildcard needs the DNS-01 challenge"},
		{"{email: ops@example.com, names: [www.example.com.]}", "without a trailing dot"},
		{"{email: ops@example.com, names: [localhost]}", "want a fully qualified name"},
		{"{email: ops@example.com, names: [www..example.com]}", "want labels of 1 to 63"},
		{"{email: ops@example.com, names: [" + long + "]}", "want labels of 1 to 63"},
		{"{email: ops@example.com, names: [-www.example.com]}", "starts or ends with a hyphen"},
		{"{email: ops@example.com, names: [www_1.example.com]}", "letters, digits and hyphens only"},
		{"{email: ops@example.com, names: ['www.exa mple.com']}", "letters, digits and hyphens only"},
		{"{email: ops@example.com, names: [www.example.123]}", "the last label is all digits"},
		{"{email: ops@example.com, names: [a.example.com, A.example.com]}", "listeners.prod.tls.acme.names[1]: \"A.example.com\" is listed twice"},
		{"{email: ops@example.com, names: [www.example.com], dns: x}", "listeners.prod.tls.acme.dns: unknown key"},
	} {
		_, err := Parse("t.yaml", []byte(acmeBlock(c.block)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.block, err, c.want)
		}
		if err != nil && strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("%s: more than one line: %q", c.block, err)
		}
	}
	many := make([]string, maxACMENames+1)
	for i := range many {
		many[i] = "n" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + ".example.com"
	}
	if _, err := Parse("t.yaml", []byte(acmeBlock("{email: ops@example.com, names: ["+strings.Join(many, ", ")+"]}"))); err == nil || !strings.Contains(err.Error(), "at most 100") {
		t.Errorf("%d names: %v", len(many), err)
	}
}

// TestLoadACMERoots: ca_root must be a PEM certificate file.
func TestLoadACMERoots(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("-----BEGIN CERTIFICATE-----\ntruncated"), 0o600)
	for _, c := range []struct{ file, want string }{
		{filepath.Join(dir, "none.pem"), "listeners.prod.tls.acme.ca_root: stat "},
		{bad, "listeners.prod.tls.acme.ca_root: " + bad + " holds no PEM certificate"},
		{dir, "want a regular file"},
	} {
		_, err := LoadACMERoots("listeners.prod", &ACME{CARoot: c.file})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line with %q", c.file, err, c.want)
		}
	}
	if p, err := LoadACMERoots("listeners.prod", &ACME{}); p != nil || err != nil {
		t.Errorf("no ca_root: %v %v", p, err)
	}
}

// TestACMENeedsRestart: a reload re-reads certificate files, but a change
// of the acme block waits for a restart (the certificate manager starts
// with the node).
func TestACMENeedsRestart(t *testing.T) {
	a, err := Parse("t.yaml", []byte(acmeBlock("{email: ops@example.com, names: [www.example.com]}")))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("t.yaml", []byte(acmeBlock("{email: ops@example.com, names: [www.example.com, api.example.com]}")))
	if err != nil {
		t.Fatal(err)
	}
	d := a.Compare(b)
	if len(d.Restart) != 1 || !strings.HasPrefix(d.Restart[0], "listeners.prod.tls.acme.names") {
		t.Fatalf("got %+v, want listeners.prod.tls.acme.names to need a restart", d)
	}
}
