// Package pebbletest runs Pebble, Let's Encrypt's ACME test server, on
// loopback for tests, with pebble-challtestsrv as its DNS server answering
// 127.0.0.1 for every name: Pebble validates challenges by connecting to
// 127.0.0.1 on the ports the test gives (the vipswap listeners). Both are
// built from the module cache (go.mod lists them as tools) once per test
// binary.
package pebbletest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// Module is the Go module Pebble is built from.
const Module = "github.com/letsencrypt/pebble/v2"

var (
	buildMu  sync.Mutex
	buildDir string // holds pebble, pebble-challtestsrv, minica.pem, localhost-{cert,key}.pem
)

// build builds Pebble and its DNS server into a directory of their own,
// with the test CA files Pebble's HTTPS uses, once (until Cleanup).
func build() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		return buildDir, nil
	}
	dir, err := os.MkdirTemp("", "pebble-test-")
	if err != nil {
		return "", err
	}
	if err := buildInto(dir); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	buildDir = dir
	return dir, nil
}

// buildInto builds the binaries into dir and copies the CA files there.
func buildInto(dir string) error {
	out, err := exec.Command("go", "build", "-o", dir+"/", Module+"/cmd/pebble", Module+"/cmd/pebble-challtestsrv").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build pebble: %v\n%s", err, out)
	}
	out, err = exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module).Output()
	if err != nil {
		return fmt.Errorf("go list -m %s: %v", Module, err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "test", "certs")
	for f, to := range map[string]string{"pebble.minica.pem": "minica.pem", "localhost/cert.pem": "localhost-cert.pem", "localhost/key.pem": "localhost-key.pem"} {
		raw, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, to), raw, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Cleanup removes the built binaries (the next Start builds them again);
// call it when the tests that start Pebble are done.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir = ""
	}
}

// Pebble is a running ACME server.
type Pebble struct {
	// Directory is its ACME directory URL.
	Directory string
	// CARoot is the PEM file of the CA of its HTTPS certificate (what
	// acme.ca_root names).
	CARoot string

	mgmt string
	proc *vstest.Process
}

// Options say where Pebble validates and what it issues.
type Options struct {
	// HTTPPort and TLSPort are where it connects for HTTP-01 and
	// TLS-ALPN-01.
	HTTPPort, TLSPort int
	// Validity is the certificates' lifetime; zero means 90 days.
	Validity time.Duration
}

// Start runs Pebble and its DNS server; the test's cleanup stops them.
func Start(t testing.TB, o Options) *Pebble {
	t.Helper()
	dir, err := build()
	if err != nil {
		t.Fatal(err)
	}
	dns := vstest.FreeAddr(t)
	vstest.Start(t, filepath.Join(dir, "pebble-challtestsrv"),
		"-dnsserver", dns, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-doh", "", "-tlsalpn01", "", "-management", vstest.FreeAddr(t))
	listen, mgmt := vstest.FreeAddr(t), vstest.FreeAddr(t)
	validity := uint64(o.Validity / time.Second)
	if validity == 0 {
		validity = 90 * 24 * 3600
	}
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": filepath.Join(dir, "localhost-cert.pem"), "privateKey": filepath.Join(dir, "localhost-key.pem"),
		"httpPort": o.HTTPPort, "tlsPort": o.TLSPort, "ocspResponderURL": "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles":                       map[string]any{"default": map[string]any{"description": "test", "validityPeriod": validity}},
	}}
	raw, _ := json.Marshal(conf)
	cfgPath := filepath.Join(t.TempDir(), "pebble.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	p := &Pebble{
		Directory: "https://" + listen + "/dir",
		CARoot:    filepath.Join(dir, "minica.pem"),
		mgmt:      "https://" + mgmt,
	}
	p.proc = vstest.Start(t, filepath.Join(dir, "pebble"), "-config", cfgPath, "-dnsserver", dns)
	vstest.WaitFor(t, 30*time.Second, func() error {
		_, err := p.get("/roots/0")
		return err
	})
	return p
}

// client trusts Pebble's HTTPS certificate.
func (p *Pebble) client() *http.Client {
	raw, _ := os.ReadFile(p.CARoot)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(raw)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func (p *Pebble) get(path string) ([]byte, error) {
	resp, err := p.client().Get(p.mgmt + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("pebble %s: %s", path, resp.Status)
	}
	return body, err
}

// Roots returns the root that signs what Pebble issues (it makes a new
// one each run).
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	raw, err := p.get("/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if b, _ := pem.Decode(raw); b == nil || !pool.AppendCertsFromPEM(raw) {
		t.Fatalf("pebble's root: no PEM certificate in %q", raw)
	}
	return pool
}

var issued = regexp.MustCompile(`Issued certificate serial ([0-9a-f]+)`)

// Issued returns the serials of the certificates Pebble has issued, as
// its log says.
func (p *Pebble) Issued() []string {
	var out []string
	for _, m := range issued.FindAllStringSubmatch(p.proc.Output(), -1) {
		out = append(out, m[1])
	}
	return out
}

// Output is what Pebble has logged.
func (p *Pebble) Output() string { return p.proc.Output() }
