package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
)

// TestAdminOverTLS: with admin.tls, the CLI reaches the admin API at its
// https URL when $VIPSWAP_CA names the CA to trust; without it the
// certificate is refused, and an unreadable $VIPSWAP_CA is one line.
// vipswap check reads the admin certificate too.
func TestAdminOverTLS(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "127.0.0.1")
	_, addrs := startStatic(t, 1)
	cfg := strings.Replace(testConfig(dir, staticSlots(addrs)), "  listen: 127.0.0.1:0\n",
		"  listen: 127.0.0.1:0\n  tls: {certs: [{cert: 127.0.0.1.crt, key: 127.0.0.1.key}]}\n", 1)
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := runCmd(t, "check", "-c", path); code != 0 {
		t.Fatalf("check: %d %s", code, out)
	}
	p := vstest.Start(t, vstest.Binary(t), "serve", "-c", path)
	admin := "https://" + p.WaitLine(t, regexp.MustCompile(`msg=listening listener=admin addr=(\S+)`), 30*time.Second)[1]

	t.Setenv("VIPSWAP_CA", cert.CertFile)
	if code, out := runCmd(t, "status", "--admin", admin); code != 0 || !strings.Contains(out, "blue") || !strings.Contains(out, "admin TLS: 127.0.0.1 until ") {
		t.Fatalf("status over https with $VIPSWAP_CA: %d %s; want the admin API's certificate and its expiry shown", code, out)
	}
	if code, out := runCmd(t, "status", "--json", "--admin", admin); code != 0 || !regexp.MustCompile(`"admin_tls": \[\s*\{\s*"names": \[\s*"127.0.0.1"\s*\],\s*"not_after": "`).MatchString(out) {
		t.Fatalf("status --json: %d %s; want admin_tls", code, out)
	}
	t.Setenv("VIPSWAP_CA", "")
	if code, out := runCmd(t, "status", "--admin", admin); code == 0 || !strings.Contains(out, "certificate") {
		t.Fatalf("status without the CA: %d %s; want the certificate refused", code, out)
	}
	t.Setenv("VIPSWAP_CA", filepath.Join(dir, "missing.pem"))
	if code, out := runCmd(t, "status", "--admin", admin); code == 0 || !strings.Contains(out, "admin API's CA") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Fatalf("status with a missing $VIPSWAP_CA: %d %s; want one line", code, out)
	}
}
