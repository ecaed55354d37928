package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/pebbletest"
	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// acmeSetup is a node whose prod listener gets its certificates from a
// Pebble on loopback.
type acmeSetup struct {
	dir, path   string
	prod, stage string // the listeners' addresses
	pebble      *pebbletest.Pebble
}

// port returns addr's port.
func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// newACMESetup starts Pebble and writes a configuration whose prod
// listener (TLS) has an acme block for names and whose stage listener is
// cleartext, or TLS with files when stageTLS is set (no HTTP-01 then).
// Pebble validates HTTP-01 on stage's port and TLS-ALPN-01 on prod's,
// unless noTLSALPN sends TLS-ALPN-01 to a closed port.
func newACMESetup(t *testing.T, o pebbletest.Options, noTLSALPN, stageTLS bool, names ...string) *acmeSetup {
	t.Helper()
	s := &acmeSetup{dir: t.TempDir(), prod: vstest.FreeAddr(t), stage: vstest.FreeAddr(t)}
	o.HTTPPort, o.TLSPort = port(t, s.stage), port(t, s.prod)
	if noTLSALPN {
		o.TLSPort = port(t, vstest.FreeAddr(t))
	}
	s.pebble = pebbletest.Start(t, o)
	stage := "  stage: " + s.stage + "\n"
	if stageTLS {
		stage = fmt.Sprintf("  stage:\n    addr: %s\n    tls:\n      certs:\n        - {cert: localhost.crt, key: localhost.key}\n", s.stage)
		tlstest.Valid(t, s.dir, "localhost")
	}
	s.path = writeConfig(t, s.dir, staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	raw, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "  prod: 127.0.0.1:0\n  stage: 127.0.0.1:0\n", fmt.Sprintf(`  prod:
    addr: %s
    tls:
      acme:
        email: ops@example.com
        ca: %s
        ca_root: %s
        names: [%s]
%s`, s.prod, s.pebble.Directory, s.pebble.CARoot, strings.Join(names, ", "), stage), 1)
	if err := os.WriteFile(s.path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// served returns the certificate prod serves to a client asking for name
// that trusts roots, or the handshake's error.
func served(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitServed waits until prod serves name a certificate roots verify,
// whose not_after is after notAfter, and returns it.
func waitServed(t *testing.T, addr, name string, roots *x509.CertPool, after time.Time) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	vstest.WaitFor(t, 2*time.Minute, func() error {
		c, err := served(addr, name, roots)
		if err != nil {
			return err
		}
		if !c.NotAfter.After(after) {
			return fmt.Errorf("serves a certificate valid until %s, want a later one", c.NotAfter)
		}
		leaf = c
		return nil
	})
	return leaf
}

// TestACMEHTTP01: a certificate is obtained by HTTP-01 (answered on the
// cleartext stage listener, TLS-ALPN-01 being impossible) and served on
// prod to clients that trust Pebble; status lists it; other paths of
// /.well-known/acme-challenge/ route to the instances as usual.
func TestACMEHTTP01(t *testing.T) {
	s := newACMESetup(t, pebbletest.Options{}, true, false, "www.example.com")
	n, out := startNode(t, s.path)
	roots := s.pebble.Roots(t)
	leaf := waitServed(t, s.prod, "www.example.com", roots, time.Time{})
	if !strings.Contains(out.String(), "challenge=http-01") {
		t.Errorf("no HTTP-01 validation was answered:\n%s", out)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "www.example.com" {
		t.Errorf("names %v, want [www.example.com]", leaf.DNSNames)
	}
	st := n.certificateStatus(route.Prod)
	if len(st) != 1 || !st[0].NotAfter.Equal(leaf.NotAfter.UTC()) || st[0].Names[0] != "www.example.com" {
		t.Errorf("status %+v, want the certificate served (until %s)", st, leaf.NotAfter)
	}
	metrics, err := get("http://" + n.adminLn.Addr().String() + "/metrics")
	series := `vipswap_certificate_expiry_timestamp_seconds{index="0",listener="prod",name="www.example.com"} `
	_, value, _ := strings.Cut(metrics, series)
	value, _, _ = strings.Cut(value, "\n")
	if v, perr := strconv.ParseFloat(value, 64); err != nil || perr != nil || int64(v) != leaf.NotAfter.Unix() {
		t.Errorf("/metrics: %v %q; want %s%d", err, value, series, leaf.NotAfter.Unix())
	}
	// No challenge pending: the path routes like any other.
	resp, err := http.Get("http://" + s.stage + "/.well-known/acme-challenge/nothing-pending")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "green http" { // stage routes to the standby slot
		t.Errorf("GET of an unknown challenge: %s %q, want the instance's answer", resp.Status, body)
	}
	// Claims of a managed name with no validation pending, odd tokens,
	// other methods: none is answered as a validation, all route as usual.
	for _, target := range []string{
		"/.well-known/acme-challenge/" + strings.Repeat("A", 4000),
		"/.well-known/acme-challenge/../../state.db",
		"/.well-known/acme-challenge/x/y",
		"/.well-known/acme-challenge/",
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.stage+target, nil)
		req.Host = "www.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "green http" && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s for www.example.com: %s %q, want the instance's answer (or a 400 for the path)", target[:min(len(target), 60)], resp.Status, body)
		}
	}
	// A name it does not manage gets no certificate (no files either).
	if _, err := served(s.prod, "other.example.com", roots); err == nil {
		t.Error("a handshake for a name without a certificate succeeded")
	}
	// A reload keeps the ACME certificate served; a change of the acme
	// block is refused, and needs a restart.
	if _, err := n.reload(t.Context(), wire.ChangeRequest{Actor: "test"}); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if c, err := served(s.prod, "www.example.com", roots); err != nil || c.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("after a reload: %v %v, want the same certificate", c, err)
	}
	raw, _ := os.ReadFile(s.path)
	os.WriteFile(s.path, []byte(strings.Replace(string(raw), "names: [www.example.com]", "names: [www.example.com, api.example.com]", 1)), 0o600)
	if _, err := n.reload(t.Context(), wire.ChangeRequest{Actor: "test"}); err == nil || !strings.Contains(err.Error(), "listeners.prod.tls.acme.names") {
		t.Errorf("reload of a changed acme block: %v, want a refusal naming it", err)
	}
	// Stored beside the state file, readable by vipswap alone.
	fi, err := os.Stat(filepath.Join(s.dir, "state.db.acme"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state.db.acme: %v %v, want a directory of mode 0700", fi, err)
	}
}

// TestACMETLSALPN01: with no cleartext listener, the certificate is
// obtained by TLS-ALPN-01, answered on the TLS listener itself; normal
// clients still negotiate HTTP/1.1 and get answers.
func TestACMETLSALPN01(t *testing.T) {
	s := newACMESetup(t, pebbletest.Options{}, false, true, "api.example.com")
	_, out := startNode(t, s.path)
	roots := s.pebble.Roots(t)
	waitServed(t, s.prod, "api.example.com", roots, time.Time{})
	if !strings.Contains(out.String(), "challenge=tls-alpn-01") {
		t.Errorf("no TLS-ALPN-01 validation was answered:\n%s", out)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, s.prod)
		},
	}}
	resp, err := hc.Get("https://api.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "blue https" || resp.TLS.NegotiatedProtocol == "acme-tls/1" {
		t.Errorf("got %q over %q, want blue https", body, resp.TLS.NegotiatedProtocol)
	}
	// A client that sends no name gets the first ACME name's certificate
	// (there are no files).
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.prod, &tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Errorf("without SNI: %v", err)
	} else {
		if names := c.ConnectionState().PeerCertificates[0].DNSNames; !slices.Equal(names, []string{"api.example.com"}) {
			t.Errorf("without SNI: a certificate for %v, want api.example.com's", names)
		}
		c.Close()
	}
	// Anyone may offer acme-tls/1: with no validation pending it is
	// refused, logged once, and nothing else changes.
	for range 5 {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.prod,
			&tls.Config{ServerName: "api.example.com", NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			t.Fatal("an acme-tls/1 handshake with no validation pending succeeded")
		}
	}
	if got := strings.Count(out.String(), "TLS-ALPN-01 handshake for a name with no validation pending"); got != 1 {
		t.Errorf("the refusals were logged %d times, want once:\n%s", got, out)
	}
	waitServed(t, s.prod, "api.example.com", roots, time.Time{})
}

// TestACMERenewal: a certificate is renewed before it expires and the new
// one is served (Pebble issues 30-second certificates here; renewal is
// looked at every 200ms, and begins with a third of the lifetime left).
func TestACMERenewal(t *testing.T) {
	acmeTuning.renewCheck, acmeTuning.renewalRatio = 200*time.Millisecond, 1.0/3
	t.Cleanup(func() { acmeTuning.renewCheck, acmeTuning.renewalRatio = 0, 0 })
	s := newACMESetup(t, pebbletest.Options{Validity: 30 * time.Second}, false, false, "www.example.com")
	n, _ := startNode(t, s.path)
	roots := s.pebble.Roots(t)
	first := waitServed(t, s.prod, "www.example.com", roots, time.Time{})
	second := waitServed(t, s.prod, "www.example.com", roots, first.NotAfter)
	if !second.NotBefore.Before(first.NotAfter) {
		t.Errorf("renewed at %s, once the first certificate had expired (%s)", second.NotBefore, first.NotAfter)
	}
	if st := n.certificateStatus(route.Prod); len(st) != 1 || !st[0].NotAfter.Equal(second.NotAfter.UTC()) {
		t.Errorf("status %+v, want the renewed certificate (until %s)", st, second.NotAfter)
	}
	if got := len(s.pebble.Issued()); got < 2 {
		t.Errorf("pebble issued %d certificates, want at least 2", got)
	}
}

// stopNode shuts n down and closes it, as its test's cleanup would.
func stopNode(n *node) {
	n.shutdown()
	n.close()
}

// TestACMEUnreachableCA: an acme block whose CA does not answer does not
// stop the node: it starts, the other listener serves, the listener's
// file certificate serves every name meanwhile, and the failure is logged.
func TestACMEUnreachableCA(t *testing.T) {
	dir := t.TempDir()
	tlstest.Valid(t, dir, "localhost")
	roots := x509.NewCertPool()
	roots.AddCert(tlstest.Valid(t, dir, "localhost").X509)
	path := tlsConfig(t, dir, [][2]string{{"localhost.crt", "localhost.key"}},
		staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	closed := vstest.FreeAddr(t) // nobody listens there
	text := strings.Replace(string(raw), "      certs:\n", fmt.Sprintf("      acme:\n        email: ops@example.com\n        ca: https://%s/directory\n        names: [www.example.com]\n      certs:\n", closed), 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n, out := startNode(t, path)
	if body, err := get("http://" + n.stageLn.Addr().String() + "/"); err != nil || body != "green http" {
		t.Fatalf("stage: %q %v", body, err)
	}
	for _, name := range []string{"localhost", "www.example.com"} {
		c, err := served(n.prodLn.Addr().String(), "localhost", roots)
		if err != nil || c.Subject.CommonName != "localhost" && !slices.Contains(c.DNSNames, "localhost") {
			t.Errorf("prod, for %s: %v %v, want the file's certificate", name, c, err)
		}
	}
	vstest.WaitFor(t, time.Minute, func() error {
		if !strings.Contains(out.String(), closed) {
			return fmt.Errorf("no error naming %s logged", closed)
		}
		return nil
	})
}

// TestACMEDamagedStorage: a stored certificate that is truncated is not
// served: it is reported, removed and obtained again.
func TestACMEDamagedStorage(t *testing.T) {
	s := newACMESetup(t, pebbletest.Options{}, false, false, "www.example.com")
	n, _ := startNode(t, s.path)
	roots := s.pebble.Roots(t)
	first := waitServed(t, s.prod, "www.example.com", roots, time.Time{})
	stopNode(n)
	var crt []string
	filepath.WalkDir(filepath.Join(s.dir, "state.db.acme"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, "www.example.com.crt") {
			crt = append(crt, p)
		}
		return nil
	})
	if len(crt) != 1 {
		t.Fatalf("stored certificates %v, want one", crt)
	}
	raw, err := os.ReadFile(crt[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crt[0], raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	_, out := startNode(t, s.path)
	second := waitServed(t, s.prod, "www.example.com", roots, time.Time{})
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the damaged certificate's serial is served")
	}
	if !strings.Contains(out.String(), "damaged") {
		t.Errorf("the damage was not reported:\n%s", out)
	}
	if got := len(s.pebble.Issued()); got != 2 {
		t.Errorf("pebble issued %d certificates, want 2", got)
	}
}

// TestACMEBesideFiles: with certificate files beside the acme block, the
// ACME certificate wins for its name once obtained, and the files serve
// every other name and clients without SNI.
func TestACMEBesideFiles(t *testing.T) {
	s := newACMESetup(t, pebbletest.Options{}, false, false, "www.example.com")
	file := tlstest.Valid(t, s.dir, "localhost")
	raw, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "    tls:\n      acme:\n", "    tls:\n      certs:\n        - {cert: localhost.crt, key: localhost.key}\n      acme:\n", 1)
	if err := os.WriteFile(s.path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n, _ := startNode(t, s.path)
	roots := s.pebble.Roots(t)
	leaf := waitServed(t, s.prod, "www.example.com", roots, time.Time{})
	if c, err := served(s.prod, "localhost", file.Pool()); err != nil || !c.Equal(file.X509) {
		t.Errorf("localhost: %v, want the file's certificate", err)
	}
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.prod, &tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Errorf("without SNI: %v", err)
	} else {
		if !c.ConnectionState().PeerCertificates[0].Equal(file.X509) {
			t.Error("without SNI: not the file's certificate")
		}
		c.Close()
	}
	st := n.certificateStatus(route.Prod)
	if len(st) != 2 || st[0].Names[0] != "localhost" || st[1].Names[0] != "www.example.com" || !st[1].NotAfter.Equal(leaf.NotAfter.UTC()) {
		t.Errorf("status %+v, want the file's certificate, then the ACME one", st)
	}
}

// TestACMENotYetObtained: an ACME-only listener whose certificate is not
// obtained yet (its CA does not answer) fails those handshakes, says so
// once a minute at most, and the node serves on.
func TestACMENotYetObtained(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "  prod: 127.0.0.1:0\n", fmt.Sprintf(
		"  prod:\n    addr: 127.0.0.1:0\n    tls:\n      acme: {email: ops@example.com, ca: 'https://%s/dir', names: [www.example.com]}\n", vstest.FreeAddr(t)), 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n, out := startNode(t, path)
	for range 3 {
		if _, err := served(n.prodLn.Addr().String(), "www.example.com", nil); err == nil {
			t.Fatal("a handshake succeeded without a certificate")
		}
	}
	if got := strings.Count(out.String(), "no certificate yet"); got != 1 {
		t.Errorf("logged %d times, want once:\n%s", got, out)
	}
	if body, err := get("http://" + n.stageLn.Addr().String() + "/"); err != nil || body != "green http" {
		t.Errorf("stage: %q %v", body, err)
	}
	if st := n.certificateStatus(route.Prod); len(st) != 0 {
		t.Errorf("status lists %+v, want nothing yet", st)
	}
}
