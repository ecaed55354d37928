package acmecert

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/certmagic"
	"github.com/vipswap/vipswap/internal/tlstest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestWholeChain: a stored chain must be PEM certificates end to end.
func TestWholeChain(t *testing.T) {
	dir := t.TempDir()
	c := pemOf(t, tlstest.Valid(t, dir, "www.example.com").CertFile)
	chain := string(c) + string(c)
	if err := wholeChain([]byte(chain)); err != nil {
		t.Fatalf("a whole chain: %v", err)
	}
	for name, bad := range map[string]string{
		"truncated":      chain[:len(chain)-40],
		"trailing bytes": chain + "garbage",
		"empty":          "",
		"a key":          "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"not DER":        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"binary":         "\x00\xff\x00",
	} {
		if err := wholeChain([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestDamagedInEtcd: a truncated certificate stored in etcd is removed
// (with its key and metadata) before the manager starts, so that it is
// obtained again; a whole one stays.
func TestDamagedInEtcd(t *testing.T) {
	s := newEtcdStorage(t)
	ctx := t.Context()
	dir := t.TempDir()
	good := tlstest.Valid(t, dir, "good.example.com")
	bad := tlstest.Valid(t, dir, "bad.example.com")
	m, err := New(Options{Listener: "listeners.prod", Email: "ops@example.com", CA: "https://127.0.0.1:1/dir",
		Names: []string{"good.example.com", "bad.example.com"}, Storage: s, TLSAddr: "127.0.0.1:443"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ik := m.issuer.IssuerKey()
	put := func(name string, cert, key []byte) {
		s.Store(ctx, certmagic.StorageKeys.SiteCert(ik, name), cert)
		s.Store(ctx, certmagic.StorageKeys.SitePrivateKey(ik, name), key)
		s.Store(ctx, certmagic.StorageKeys.SiteMeta(ik, name), []byte("{}"))
	}
	put("good.example.com", pemOf(t, good.CertFile), pemOf(t, good.KeyFile))
	badCert := pemOf(t, bad.CertFile)
	put("bad.example.com", badCert[:len(badCert)/2], pemOf(t, bad.KeyFile))
	m.discardDamaged("good.example.com")
	m.discardDamaged("bad.example.com")
	if !s.Exists(ctx, certmagic.StorageKeys.SiteCert(ik, "good.example.com")) {
		t.Error("a whole certificate was removed")
	}
	for _, k := range []string{certmagic.StorageKeys.SiteCert(ik, "bad.example.com"), certmagic.StorageKeys.SitePrivateKey(ik, "bad.example.com"), certmagic.StorageKeys.SiteMeta(ik, "bad.example.com")} {
		if s.Exists(ctx, k) {
			t.Errorf("%s of the damaged certificate stayed", filepath.Base(k))
		}
	}
	locks, err := s.Client.Get(ctx, s.Prefix+"locks/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if locks.Count != 0 {
		t.Errorf("%d locks stayed", locks.Count)
	}
}

func pemOf(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
