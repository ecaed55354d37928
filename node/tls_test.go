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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/slotapp"
	"github.com/vipswap/vipswap/wire"
)

// protoInstance answers the probe contract for slot, and every other
// request with "slot PROTO", PROTO being the X-Forwarded-Proto it got.
func protoInstance(t *testing.T, slot string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/ping", slotapp.Ping(slot))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, slot+" "+r.Header.Get("X-Forwarded-Proto"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// tlsConfig writes a configuration whose prod listener speaks TLS with
// these certificate files, relative to dir.
func tlsConfig(t *testing.T, dir string, certs [][2]string, slots ...string) string {
	t.Helper()
	path := writeConfig(t, dir, slots...)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	for _, c := range certs {
		list = append(list, fmt.Sprintf("        - {cert: %s, key: %s}\n", c[0], c[1]))
	}
	text := strings.Replace(string(raw), "  prod: 127.0.0.1:0\n",
		"  prod:\n    addr: 127.0.0.1:0\n    tls:\n      certs:\n"+strings.Join(list, ""), 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTLSListener: prod speaks HTTPS with the certificate a client asks
// for by name (the first one otherwise); the instances are told the
// request came over https; swaps under HTTPS load fail no request.
func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	ip := tlstest.Valid(t, dir, "127.0.0.1")
	named := tlstest.Valid(t, dir, "localhost")
	path := tlsConfig(t, dir, [][2]string{{"127.0.0.1.crt", "127.0.0.1.key"}, {"localhost.crt", "localhost.key"}},
		staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	n, _ := startNode(t, path)
	roots := x509.NewCertPool()
	roots.AddCert(ip.X509)
	roots.AddCert(named.X509)
	addr := n.prodLn.Addr().String()

	for _, c := range []struct{ serverName, want string }{{"", "127.0.0.1"}, {"localhost", "localhost"}} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: c.serverName})
		if err != nil {
			t.Fatalf("TLS to prod asking for %q: %v", c.serverName, err)
		}
		got := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
		conn.Close()
		if got != c.want {
			t.Fatalf("asking for %q, prod served %q, want %q", c.serverName, got, c.want)
		}
	}

	for what, c := range map[string]*tls.Config{
		"TLS 1.1":         {RootCAs: roots, MaxVersion: tls.VersionTLS11},
		"a CBC suite":     {RootCAs: roots, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
		"an unknown name": {RootCAs: roots, ServerName: "elsewhere.example"}, // served the default, which the client refuses
	} {
		if conn, err := tls.Dial("tcp", addr, c); err == nil {
			conn.Close()
			t.Fatalf("a client offering %s was served", what)
		}
	}

	st := n.ctrl.Status()
	if len(st.Listeners[0].TLS) != 2 || st.Listeners[0].TLS[0].Names[0] != "127.0.0.1" || st.Listeners[0].TLS[1].Names[0] != "localhost" ||
		!st.Listeners[0].TLS[1].NotAfter.Equal(named.X509.NotAfter) || st.Listeners[1].TLS != nil {
		t.Fatalf("status listeners: %+v; want prod's two certificates with their names and expiry, none on stage", st.Listeners)
	}

	metrics, err := get("http://" + n.adminLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var expiry float64
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, `vipswap_certificate_expiry_timestamp_seconds{index="1",listener="prod",name="localhost"} `) {
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &expiry)
		}
	}
	if int64(expiry) != named.X509.NotAfter.Unix() {
		t.Fatalf("metrics say the localhost certificate expires at %v, want %d", expiry, named.X509.NotAfter.Unix())
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	url := "https://" + addr + "/"
	getTLS := func() (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		return string(body), err
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		got, err := getTLS()
		if err == nil && got != "blue https" {
			err = fmt.Errorf("answered %q, want blue https", got)
		}
		return err
	})
	// The stage listener stays cleartext.
	if got, err := get(listenerURL(n.stageLn)); err != nil || got != "green http" {
		t.Fatalf("stage answered %q, %v; want green http", got, err)
	}

	var failed, served atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := getTLS(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					served.Add(1)
				}
			}
		})
	}
	for i := range 6 {
		before := served.Load()
		vstest.WaitFor(t, time.Minute, func() error {
			if served.Load() < before+50 {
				return fmt.Errorf("only %d HTTPS requests served", served.Load())
			}
			return nil
		})
		if _, err := n.ctrl.Swap(context.Background(), wire.ChangeRequest{Reason: fmt.Sprintf("swap %d over TLS", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("6 swaps under HTTPS load: %d served, %d failed", served.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d HTTPS requests failed across the swaps, first: %v", failed.Load(), firstErr.Load())
	}
}

// TestBadCertificateStartsNothing: a node whose certificate has expired
// does not start, says why on one line, and leaves the address free.
func TestBadCertificateStartsNothing(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	tlstest.New(t, dir, "127.0.0.1", now.Add(-2*time.Hour), now.Add(-time.Hour))
	path := tlsConfig(t, dir, [][2]string{{"127.0.0.1.crt", "127.0.0.1.key"}}, staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	openRefused(t, path, "listeners.prod.tls.certs[0]: "+filepath.Join(dir, "127.0.0.1.crt")+" expired on")
}

// openRefused opens a node on the configuration at path, wants it refused
// on one line holding want, and no listener bound.
func openRefused(t *testing.T, path, want string) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	out := &vstest.Buffer{}
	logs, log := newLogSwitch(cfg.Log, out)
	n := newNode(Setup{Path: path, Config: cfg, Stderr: out, Version: "test"}, logs, log)
	defer n.close()
	err = n.open()
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("open: %v; want one line with %q", err, want)
	}
	if n.prodLn != nil || n.stageLn != nil || n.adminLn != nil {
		t.Fatal("a listener was bound though a certificate was refused")
	}
}

// TestBadStageCertificateBindsNothing: every listener's certificates are
// read before any address is bound. Those of stage were read after prod
// was bound, so a bad stage certificate left prod bound (and accepting
// into its queue) until the node closed.
func TestBadStageCertificateBindsNothing(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	tlstest.Valid(t, dir, "127.0.0.1")
	tlstest.New(t, dir, "old.example", now.Add(-2*time.Hour), now.Add(-time.Hour))
	path := tlsConfig(t, dir, [][2]string{{"127.0.0.1.crt", "127.0.0.1.key"}}, staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "  stage: 127.0.0.1:0\n",
		"  stage:\n    addr: 127.0.0.1:0\n    tls:\n      certs:\n        - {cert: old.example.crt, key: old.example.key}\n", 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	openRefused(t, path, "listeners.stage.tls.certs[0]: "+filepath.Join(dir, "old.example.crt")+" expired on")
}

// TestReloadReplacesCertificates: a reload re-reads a TLS listener's
// certificates: new handshakes get the new one, a connection opened
// before goes on, status shows it; a bad one is refused with its reason
// and the one in force stays.
func TestReloadReplacesCertificates(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	first := tlstest.New(t, dir, "127.0.0.1", now.Add(-time.Minute), now.Add(time.Hour))
	path := tlsConfig(t, dir, [][2]string{{"127.0.0.1.crt", "127.0.0.1.key"}},
		staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	n, _ := startNode(t, path)
	addr := n.prodLn.Addr().String()
	served := func(conf *tls.Config) (*x509.Certificate, error) {
		conn, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	insecure := &tls.Config{InsecureSkipVerify: true} // the test compares what is served
	if got, err := served(insecure); err != nil || !got.Equal(first.X509) {
		t.Fatalf("before the reload: %v", err)
	}
	// A connection kept open across the reload.
	kept := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: first.Pool()}}, Timeout: time.Minute}
	defer kept.CloseIdleConnections()
	keptGet := func() error {
		resp, err := kept.Get("https://" + addr + "/")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	vstest.WaitFor(t, 30*time.Second, keptGet)

	// The files are replaced in place, as a renewal does.
	second := tlstest.New(t, dir, "127.0.0.1", now.Add(-time.Minute), now.Add(2*time.Hour))
	res, err := n.reload(context.Background(), wire.ChangeRequest{Reason: "renewed"})
	if err != nil || !res.Applied && !res.InEffect {
		t.Fatalf("reload with a renewed certificate: %+v, %v", res, err)
	}
	if !strings.Contains(strings.Join(res.Changes, "\n"), "listeners.prod.tls: certificates re-read (127.0.0.1 until ") {
		t.Fatalf("the reload's changes %q do not say the certificates were re-read", res.Changes)
	}
	if got, err := served(insecure); err != nil || !got.Equal(second.X509) {
		t.Fatalf("after the reload a new handshake got %v (%v), want the renewed certificate", got.NotAfter, err)
	}
	if err := keptGet(); err != nil {
		t.Fatalf("the connection opened before the reload: %v", err)
	}
	if st := n.ctrl.Status(); len(st.Listeners[0].TLS) != 1 || !st.Listeners[0].TLS[0].NotAfter.Equal(second.X509.NotAfter) {
		t.Fatalf("status after the reload: %+v", st.Listeners[0].TLS)
	}

	// An expired one is refused, and the renewed one stays.
	tlstest.New(t, dir, "127.0.0.1", now.Add(-2*time.Hour), now.Add(-time.Hour))
	_, err = n.reload(context.Background(), wire.ChangeRequest{})
	if err == nil || !strings.Contains(err.Error(), "expired on") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("reload with an expired certificate: %v; want it refused on one line", err)
	}
	if got, err := served(insecure); err != nil || !got.Equal(second.X509) {
		t.Fatalf("after the refused reload a new handshake got %v (%v), want the one in force", got, err)
	}
}

// TestReloadsUnderTLSLoad: clients that keep their connections and clients
// that make a new one (a full handshake) for every request run while the
// certificate is replaced and reloaded 10 times: no handshake and no
// request fails, and each reload's certificate is the one new handshakes
// get.
func TestReloadsUnderTLSLoad(t *testing.T) {
	dir := t.TempDir()
	const reloads = 10
	var certs []tlstest.Cert
	roots := x509.NewCertPool()
	for i := range reloads + 1 {
		sub := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		c := tlstest.Valid(t, sub, "127.0.0.1")
		roots.AddCert(c.X509)
		certs = append(certs, c)
	}
	install := func(c tlstest.Cert) {
		for _, f := range [][2]string{{c.CertFile, "127.0.0.1.crt"}, {c.KeyFile, "127.0.0.1.key"}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f[1]), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(certs[0])
	path := tlsConfig(t, dir, [][2]string{{"127.0.0.1.crt", "127.0.0.1.key"}},
		staticSlot("blue", protoInstance(t, "blue")), staticSlot("green", protoInstance(t, "green")))
	n, _ := startNode(t, path)
	url := "https://" + n.prodLn.Addr().String() + "/"

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 8 {
		// Even clients keep their connections; odd ones handshake for
		// every request.
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: i%2 == 1}
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				resp, err := hc.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	served := func() (*x509.Certificate, error) {
		conn, err := tls.Dial("tcp", n.prodLn.Addr().String(), &tls.Config{RootCAs: roots})
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0], nil
	}
	for i := 1; i <= reloads; i++ {
		before := ok.Load()
		vstest.WaitFor(t, 30*time.Second, func() error {
			if ok.Load() < before+50 {
				return fmt.Errorf("%d requests answered since reload %d", ok.Load()-before, i-1)
			}
			return nil
		})
		install(certs[i])
		if _, err := n.reload(context.Background(), wire.ChangeRequest{Reason: fmt.Sprintf("renewal %d", i)}); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if got, err := served(); err != nil || !got.Equal(certs[i].X509) {
			t.Fatalf("after reload %d a new handshake got %v (%v), want the new certificate", i, got, err)
		}
	}
	before := ok.Load()
	vstest.WaitFor(t, 30*time.Second, func() error {
		if ok.Load() < before+50 {
			return fmt.Errorf("%d requests answered since the last reload", ok.Load()-before)
		}
		return nil
	})
	stop()
	wg.Wait()
	t.Logf("%d requests (half of them on a new TLS connection each) through %d reloads, %d failed", ok.Load(), reloads, failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed across the reloads, the first: %q", failed.Load(), failures[0])
	}
}
