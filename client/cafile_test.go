package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/client"
)

// TestCAFileIsBounded: VIPSWAP_CA naming what is not a small regular file
// (a device that never ends such as /dev/zero, a directory, a file of
// many MiB) fails the call at once in one line: the CLI read it whole,
// and /dev/zero made it grow until the memory ran out.
func TestCAFileIsBounded(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(big, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	paths := []string{dir, big}
	if _, err := os.Stat("/dev/zero"); err == nil {
		paths = append(paths, "/dev/zero")
	}
	for _, p := range paths {
		c := client.New("https://127.0.0.1:1", client.WithCAFile(p))
		_, err := c.Status(context.Background())
		if err == nil || !strings.Contains(err.Error(), "want a regular file of at most") || strings.Contains(err.Error(), "\n") {
			t.Errorf("VIPSWAP_CA=%s: got %v, want one line saying it is no small regular file", p, err)
		}
	}
}

// TestCleartextToTLSAdminSaysHTTPS: a bare host:port means http; against
// an admin API with admin.tls the call got "not as vipswap does: is this
// vipswap's admin address?", which it is. It says to use https.
func TestCleartextToTLSAdminSaysHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	_, err := client.New("http://" + host).Status(context.Background())
	want := "the admin API at http://" + host + " speaks HTTPS: name it https://" + host
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
}
