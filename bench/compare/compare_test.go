//go:build linux

package main

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// tlsServer serves handler over TLS with the bench certificate, HTTP/2 by
// ALPN when h2, and counts full and resumed handshakes.
func tlsServer(t *testing.T, h2 bool, handler http.HandlerFunc) (srv *httptest.Server, certs *certFiles, full, resumed *atomic.Int64) {
	t.Helper()
	certs, err := makeCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certs.cert, certs.key)
	if err != nil {
		t.Fatal(err)
	}
	full, resumed = new(atomic.Int64), new(atomic.Int64)
	srv = httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = h2
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{pair},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				resumed.Add(1)
			} else {
				full.Add(1)
			}
			return nil
		},
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, certs, full, resumed
}

func backendAnswer(w http.ResponseWriter, _ *http.Request) {
	w.Write([]byte(`{"slot":"bench"}`))
}

func TestHandshakeLoadMakesAFullHandshakePerRequest(t *testing.T) {
	var requests atomic.Int64
	srv, certs, full, resumed := tlsServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		backendAnswer(w, r)
	})
	rep := runHandshakeLoad(srv.Listener.Addr().String(), 4, 300*time.Millisecond, certs.roots)
	if rep.OK == 0 || rep.Errors != 0 {
		t.Fatalf("%d requests, %d errors (%s)", rep.OK, rep.Errors, rep.FirstError)
	}
	if resumed.Load() != 0 || full.Load() != requests.Load() || requests.Load() < int64(rep.OK) {
		t.Fatalf("%d full and %d resumed handshakes for %d requests (%d reported)", full.Load(), resumed.Load(), requests.Load(), rep.OK)
	}
	if rep.P50 <= 0 || rep.P99 < rep.P50 {
		t.Fatalf("p50 %v, p99 %v", rep.P50, rep.P99)
	}
}

func TestHandshakeLoadCountsBadAnswers(t *testing.T) {
	srv, certs, _, _ := tlsServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})
	rep := runHandshakeLoad(srv.Listener.Addr().String(), 2, 200*time.Millisecond, certs.roots)
	if rep.OK != 0 || rep.Errors == 0 || !strings.Contains(rep.FirstError, "502") {
		t.Fatalf("%d OK, %d errors, first %q: want only errors, a 502", rep.OK, rep.Errors, rep.FirstError)
	}
}

func TestCheckHTTPSSaysWhenATargetDoesNotSpeakH2(t *testing.T) {
	srv, certs, _, _ := tlsServer(t, false, backendAnswer)
	if _, err := checkHTTPS(srv.URL+"/", certs.roots, false); err != nil {
		t.Fatalf("over HTTP/1.1: %v", err)
	}
	_, err := checkHTTPS(srv.URL+"/", certs.roots, true)
	var no errNoH2
	if !errors.As(err, &no) || !strings.Contains(err.Error(), "does not speak h2") {
		t.Fatalf("got %v, want errNoH2", err)
	}

	h2, certs2, _, _ := tlsServer(t, true, backendAnswer)
	if st, err := checkHTTPS(h2.URL+"/", certs2.roots, true); err != nil || !strings.Contains(st, "HTTP/2") {
		t.Fatalf("over h2: %q, %v", st, err)
	}
	bad, certs3, _, _ := tlsServer(t, true, func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("a proxy's own page")) })
	if _, err := checkHTTPS(bad.URL+"/", certs3.roots, true); err == nil || !strings.Contains(err.Error(), "not the backend's answer") {
		t.Fatalf("a 200 without the backend's body: %v", err)
	}
}

func TestH2load(t *testing.T) {
	vstest.Need(t, "h2load", "nghttp2-client")
	srv, _, _, _ := tlsServer(t, true, backendAnswer)
	r, err := runH2load(srv.URL+"/", t.TempDir(), 1, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.rps <= 0 || r.errors != 0 || r.p50 <= 0 || r.p99 < r.p50 {
		t.Fatalf("%+v", r)
	}

	var n, unavailable atomic.Int64
	failing, _, _, _ := tlsServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			unavailable.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		backendAnswer(w, r)
	})
	const streams = 4
	r, err = runH2load(failing.URL+"/", t.TempDir(), 1, streams, time.Second)
	// Each 503 counts once; the last few may not have reached h2load
	// before its run ended.
	if err != nil || r.rps <= 0 || int64(r.errors) > unavailable.Load() || int64(r.errors) < unavailable.Load()-streams {
		t.Fatalf("every other answer a 503 (%d): %+v, %v", unavailable.Load(), r, err)
	}

	h1, _, _, _ := tlsServer(t, false, backendAnswer)
	if _, err := runH2load(h1.URL+"/", t.TempDir(), 1, 4, time.Second); err == nil {
		t.Fatal("h2load against a server without h2: no error")
	}
}

func TestGRPCLoad(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveGRPC(ln) }()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	if err := checkGRPC(ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	rep := runGRPCLoad(ln.Addr().String(), 2, 8, 300*time.Millisecond)
	if rep.OK == 0 || rep.Errors != 0 || rep.P50 <= 0 {
		t.Fatalf("%+v", rep)
	}

	// An HTTP/1.1 server is not a gRPC one: every call fails, and says so.
	h1 := httptest.NewServer(http.HandlerFunc(backendAnswer))
	defer h1.Close()
	addr := h1.Listener.Addr().String()
	if err := checkGRPC(addr); err == nil {
		t.Fatal("checkGRPC passed an HTTP/1.1 server")
	}
	rep = runGRPCLoad(addr, 1, 2, 100*time.Millisecond)
	if rep.OK != 0 || rep.Errors == 0 || rep.FirstError == "" {
		t.Fatalf("%+v", rep)
	}
}

func TestSelected(t *testing.T) {
	for _, c := range []struct {
		filter, group, name string
		want                bool
	}{
		{"", "http", "64 keep-alive connections", true},
		{"tls", "tls", "TLS, 64 keep-alive connections", true},
		{"TLS", "h2", "HTTP/2 over TLS, 4 connections x 100 streams", false}, // a group is matched as a group
		{"h2", "h2", "HTTP/2 over TLS, 4 connections x 100 streams", true},
		{"grpc, h2", "grpc", "gRPC unary over h2c", true},
		{"64 keep", "tls", "TLS, 64 keep-alive connections", true},
		{"64 keep", "http", "256 keep-alive connections", false},
		{"http", "idle", "idle keep-alive client connections", false},
		{"idle", "idle", "idle keep-alive client connections", true},
	} {
		if got := selected(c.filter, c.group, c.name); got != c.want {
			t.Errorf("selected(%q, %q, %q) = %v", c.filter, c.group, c.name, got)
		}
	}
}
