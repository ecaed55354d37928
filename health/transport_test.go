package health

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vipswap/vipswap/internal/grpctest"
	"github.com/vipswap/vipswap/internal/tlstest"
)

func try(c *Checker, cfg Config, slot, addr string) Check {
	return c.Try(context.Background(), cfg, Target{Slot: slot, Addr: addr})
}

// TestGRPCProbe: an instance whose health service serves slot blue is
// healthy in blue, not in green (NOT_FOUND), nor in blue once it says
// NOT_SERVING; over h2c and over TLS (h2) with the slot's CA and name.
func TestGRPCProbe(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	other := tlstest.Valid(t, dir, "other")
	c := New(Config{}, func(Target, bool, Check) {})
	t.Cleanup(c.Close)
	for _, tc := range []struct {
		name string
		srv  *tls.Config
		tr   Transport
	}{
		{"h2c", nil, Transport{Protocol: "h2c"}},
		{"h2", &tls.Config{Certificates: []tls.Certificate{cert.TLS}}, Transport{Protocol: "h2", TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := grpctest.Start(t, "b1", tc.srv, "blue")
			cfg := Config{Type: TypeGRPC, Timeout: probeTimeout, Transports: map[string]Transport{"blue": tc.tr, "green": tc.tr}}
			if ck := try(c, cfg, "blue", s.Addr); !ck.OK() {
				t.Errorf("blue: %s, want L7OK", ck)
			}
			if ck := try(c, cfg, "green", s.Addr); ck.OK() || !strings.Contains(ck.String(), "NOT_FOUND") {
				t.Errorf("green: %s, want L7STS NOT_FOUND", ck)
			}
			s.Health.SetServingStatus("blue", healthpb.HealthCheckResponse_NOT_SERVING)
			if ck := try(c, cfg, "blue", s.Addr); ck.OK() || ck.String() != "L7STS NOT_SERVING" {
				t.Errorf("blue, not serving: %s, want L7STS NOT_SERVING", ck)
			}
			if tc.srv != nil {
				cfg.Transports["blue"] = Transport{Protocol: "h2", TLS: &tls.Config{RootCAs: other.Pool(), ServerName: "app.internal"}}
				if ck := try(c, cfg, "blue", s.Addr); ck.Code != L6RSP || !strings.Contains(ck.Detail, "certificate") {
					t.Errorf("with another CA: %s, want L6RSP naming the certificate", ck)
				}
			}
		})
	}
}

// TestHTTPProbeOverTLS: the http probe honours the slot's TLS: it passes
// with the CA and name that verify the instance, fails L6RSP with another
// CA; over h2 it asks in HTTP/2.
func TestHTTPProbeOverTLS(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	other := tlstest.Valid(t, dir, "other")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.URL.RequestURI() != "/api/ping?slot=blue" {
			w.WriteHeader(http.StatusTeapot)
		}
		io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	c := New(Config{}, func(Target, bool, Check) {})
	t.Cleanup(c.Close)
	good := &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}
	for _, proto := range []string{"http1", "h2"} {
		cfg := Config{Type: TypeHTTP, Path: "/api/ping?slot={slot}", Timeout: probeTimeout, Transports: map[string]Transport{"blue": {Protocol: proto, TLS: good}}}
		if ck := try(c, cfg, "blue", addr); !ck.OK() {
			t.Errorf("%s: %s, want L7OK", proto, ck)
		}
		cfg.Transports["blue"] = Transport{Protocol: proto, TLS: &tls.Config{RootCAs: other.Pool(), ServerName: "app.internal"}}
		if ck := try(c, cfg, "blue", addr); ck.Code != L6RSP {
			t.Errorf("%s with another CA: %s, want L6RSP", proto, ck)
		}
	}
}
