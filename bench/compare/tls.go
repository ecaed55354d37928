//go:build linux

package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// certFiles is the one certificate every TLS target serves.
type certFiles struct {
	cert, key string // PEM files
	both      string // certificate then key in one file, as HAProxy wants
	roots     *x509.CertPool
}

// makeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and
// localhost into dir.
func makeCert(dir string) (*certFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vipswap bench"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	f := &certFiles{
		cert:  filepath.Join(dir, "bench.crt"),
		key:   filepath.Join(dir, "bench.key"),
		both:  filepath.Join(dir, "bench.pem"),
		roots: x509.NewCertPool(),
	}
	f.roots.AddCert(leaf)
	for _, w := range []struct {
		path string
		data []byte
	}{{f.cert, certPEM}, {f.key, keyPEM}, {f.both, append(append([]byte{}, certPEM...), keyPEM...)}} {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// clientTLS is the load generators' and checks' TLS configuration: the
// bench certificate as the only root, no session cache (every connection
// makes a full handshake), and X25519 (P-256 too, for TLS 1.2 with an
// ECDSA P-256 certificate), which is what OpenSSL's clients (wrk, h2load)
// and servers (HAProxy, nginx) settle on: Go would otherwise offer a
// post-quantum hybrid that only the Go servers would take.
func clientTLS(roots *x509.CertPool, protos ...string) *tls.Config {
	return &tls.Config{
		RootCAs:          roots,
		NextProtos:       protos,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
	}
}

// checkHTTPS asks url for / over TLS (HTTP/2 when h2) and says what is
// wrong if the answer is not the backend's 200, or not over HTTP/2 when
// h2 was asked for; else it says which TLS version, group and suite the
// connection had.
func checkHTTPS(url string, roots *x509.CertPool, h2 bool) (string, error) {
	tr := &http.Transport{TLSClientConfig: clientTLS(roots), ForceAttemptHTTP2: h2, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if h2 && resp.ProtoMajor != 2 {
		alpn := "none"
		if resp.TLS != nil && resp.TLS.NegotiatedProtocol != "" {
			alpn = resp.TLS.NegotiatedProtocol
		}
		return "", errNoH2{alpn}
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), backendMark) {
		return "", fmt.Errorf("status %d, body %.60q: not the backend's answer", resp.StatusCode, body)
	}
	if resp.TLS == nil {
		return "", fmt.Errorf("not over TLS")
	}
	st := resp.TLS
	return fmt.Sprintf("%s, %s, %s, %s", tls.VersionName(st.Version), st.CurveID, tls.CipherSuiteName(st.CipherSuite), resp.Proto), nil
}

// errNoH2 says a target answered over TLS but did not choose h2 by ALPN.
type errNoH2 struct{ alpn string }

func (e errNoH2) Error() string {
	return fmt.Sprintf("target does not speak h2 (ALPN chose %s)", e.alpn)
}

// runHandshakeLoad is the "handshake" subcommand: conns workers each open
// a TLS connection, make a full handshake (no resumption), send one
// request with Connection: close, read the answer and close, for d.
func runHandshakeLoad(addr string, conns int, d time.Duration, roots *x509.CertPool) loadReport {
	cfg := clientTLS(roots, "http/1.1")
	cfg.ServerName, _, _ = net.SplitHostPort(addr)
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n")
	one := func() error {
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(10 * time.Second))
		c := tls.Client(raw, cfg)
		if err := c.Handshake(); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if c.ConnectionState().DidResume {
			return fmt.Errorf("the handshake resumed a session")
		}
		if _, err := c.Write(req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || n == 0 {
			return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
		}
		return nil
	}
	return runWorkers(conns, d, func(int) func() error { return one })
}

// runWorkers runs n workers calling their function back to back for d and
// sums up what they saw.
func runWorkers(n int, d time.Duration, worker func(i int) func() error) loadReport {
	var (
		mu   sync.Mutex
		all  []time.Duration
		rep  loadReport
		wg   sync.WaitGroup
		stop = time.Now().Add(d)
	)
	start := time.Now()
	for i := range n {
		call := worker(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs, first := 0, ""
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := call(); err != nil {
					errs++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			rep.Errors += errs
			if rep.FirstError == "" {
				rep.FirstError = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	rep.OK = len(all)
	rep.Seconds = time.Since(start).Seconds()
	rep.P50, rep.P99 = percentiles(all)
	return rep
}
