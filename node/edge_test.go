package node

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/proxy/proxyproto"
	"github.com/vipswap/vipswap/slotapp"
	"github.com/vipswap/vipswap/wire"
)

// xffInstance answers the probe contract for slot, and every other
// request with the X-Forwarded-For it got.
func xffInstance(t *testing.T, slot string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/ping", slotapp.Ping(slot))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Header.Get("X-Forwarded-For")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// edgeNode starts a node whose prod speaks TLS behind a PROXY protocol
// balancer (require), whose stage redirects to prod (accepting the
// header), and whose admin API speaks TLS.
func edgeNode(t *testing.T) (*node, tlstest.Cert, string) {
	t.Helper()
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "127.0.0.1")
	path := writeConfig(t, dir, staticSlot("blue", xffInstance(t, "blue")), staticSlot("green", xffInstance(t, "green")))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "  prod: 127.0.0.1:0\n  stage: 127.0.0.1:0\n", `  prod:
    addr: 127.0.0.1:0
    tls: {certs: [{cert: 127.0.0.1.crt, key: 127.0.0.1.key}]}
    proxy_protocol: require
  stage:
    addr: 127.0.0.1:0
    proxy_protocol: accept
    redirect_to: prod
`, 1)
	text = strings.Replace(text, "  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  tls: {certs: [{cert: admin.crt, key: admin.key}]}\n", 1)
	copyFile(t, filepath.Join(dir, "127.0.0.1.crt"), filepath.Join(dir, "admin.crt"))
	copyFile(t, filepath.Join(dir, "127.0.0.1.key"), filepath.Join(dir, "admin.key"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	n, _ := startNode(t, path)
	return n, cert, dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	raw, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEdgeProxyProtocolAndRedirect: on prod, the PROXY header comes before
// the TLS handshake and its client is the X-Forwarded-For the instance
// gets; a connection without one is closed; sessions resume with the
// store's ticket keys. Stage answers 308 to prod's https URL.
func TestEdgeProxyProtocolAndRedirect(t *testing.T) {
	n, cert, _ := edgeNode(t)
	prod := n.prodLn.Addr().(*net.TCPAddr)
	cache := tls.NewLRUClientSessionCache(4)
	viaBalancer := func(client string) (string, bool, error) {
		c, err := net.Dial("tcp", prod.String())
		if err != nil {
			return "", false, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write(proxyproto.AppendV2(nil, netip.MustParseAddrPort(client), netip.MustParseAddrPort("10.0.0.1:443")))
		tc := tls.Client(c, &tls.Config{RootCAs: cert.Pool(), ServerName: "127.0.0.1", ClientSessionCache: cache})
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return "", false, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			err = fmt.Errorf("%s: %s", resp.Status, b)
		}
		return string(b), tc.ConnectionState().DidResume, err
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		got, _, err := viaBalancer("203.0.113.50:1234")
		if err == nil && got != "203.0.113.50" {
			return fmt.Errorf("the instance got X-Forwarded-For %q, want the header's client", got)
		}
		return err
	})
	if got, resumed, err := viaBalancer("203.0.113.51:1234"); err != nil || got != "203.0.113.51" || !resumed {
		t.Fatalf("second connection: %q, resumed %v, %v", got, resumed, err)
	}
	// Without the header, prod closes the connection.
	if c, err := tls.Dial("tcp", prod.String(), &tls.Config{RootCAs: cert.Pool()}); err == nil {
		c.Close()
		t.Fatal("a TLS client without the PROXY header was served on a require listener")
	}

	stage := n.stageLn.Addr().String()
	for _, tc := range []struct{ pre, host, want string }{
		{"", "www.example.com:8080", fmt.Sprintf("308 https://www.example.com:%d/a?b=c", prod.Port)},
		{"PROXY TCP4 198.51.100.1 10.0.0.1 1 80\r\n", "www.example.com", fmt.Sprintf("308 https://www.example.com:%d/a?b=c", prod.Port)},
		{"", "a..example", "400 "},
	} {
		c, err := net.Dial("tcp", stage)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, tc.pre+"GET /a?b=c HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Location")); got != tc.want {
			t.Errorf("stage with Host %q: %s, want %s", tc.host, got, tc.want)
		}
	}
	if n.px.Redirected(1) != 3 {
		t.Errorf("redirected %d, want 3", n.px.Redirected(1))
	}
}

// TestEdgeAdminTLS: the admin API over HTTPS: the Go client (the CLI's)
// trusts it through a CA file, refuses it without; the browser guards
// hold (a cross-origin call is refused, the same https origin is not);
// cleartext is not served; a reload re-reads its certificate.
func TestEdgeAdminTLS(t *testing.T) {
	n, cert, dir := edgeNode(t)
	base := "https://" + n.adminLn.Addr().String()
	c := client.New(base, client.WithCAFile(cert.CertFile))
	if _, err := c.Status(t.Context()); err != nil {
		t.Fatalf("status over https with the CA: %v", err)
	}
	if _, err := client.New(base).Status(t.Context()); err == nil {
		t.Fatal("a client without the CA trusted the admin API's certificate")
	}
	if _, err := client.New(base, client.WithCAFile(filepath.Join(dir, "missing.pem"))).Status(t.Context()); err == nil || !strings.Contains(err.Error(), "admin API's CA") {
		t.Fatalf("a missing CA file: %v", err)
	}
	if _, err := client.New("http://" + n.adminLn.Addr().String()).Status(t.Context()); err == nil {
		t.Fatal("the admin API answered cleartext")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool()}}, Timeout: 20 * time.Second}
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		origin string
		status int
	}{{"https://evil.example", 403}, {base, 200}} {
		req, _ := http.NewRequest("POST", base+"/v1/swap", strings.NewReader(`{"dry_run":true}`))
		req.Header.Set("Origin", tc.origin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("a call from origin %s: %d, want %d", tc.origin, resp.StatusCode, tc.status)
		}
	}
	// A renewed certificate, rewritten in place, is served after a reload.
	renewed := tlstest.New(t, t.TempDir(), "127.0.0.1", time.Now().Add(-time.Minute), time.Now().Add(48*time.Hour))
	copyFile(t, renewed.CertFile, filepath.Join(dir, "admin.crt"))
	copyFile(t, renewed.KeyFile, filepath.Join(dir, "admin.key"))
	res, err := n.reload(t.Context(), wire.ChangeRequest{Actor: "test"})
	if err != nil || !strings.Contains(strings.Join(res.Changes, "\n"), "admin.tls: certificates re-read") {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	if _, err := client.New(base, client.WithCAFile(renewed.CertFile)).Status(t.Context()); err != nil {
		t.Fatalf("status after the reload, trusting the renewed certificate: %v", err)
	}
}

// TestBadAdminCertificateBindsNothing: the admin API's certificate is
// read with the listeners', before any address is bound, and refused in
// one line.
func TestBadAdminCertificateBindsNothing(t *testing.T) {
	dir := t.TempDir()
	tlstest.New(t, dir, "127.0.0.1", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	path := writeConfig(t, dir, staticSlot("blue", "127.0.0.1:1"), staticSlot("green", "127.0.0.1:2"))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  tls: {certs: [{cert: 127.0.0.1.crt, key: 127.0.0.1.key}]}\n", 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	openRefused(t, path, "admin.tls.certs[0]")
}
