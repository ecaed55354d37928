package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/vipswap/vipswap/internal/grpctest"
	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
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

// rawGRPC is an h2c instance that answers each stream as answer says,
// frame by frame.
func rawGRPC(t *testing.T, answer func(fr *http2.Framer, id uint32)) string {
	t.Helper()
	return vstest.Serve(t, func(c net.Conn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.HeadersFrame:
				answer(fr, f.StreamID)
			}
		}
	})
}

func hpackBlock(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

// TestGRPCProbeAgainstBrokenInstances: a gRPC health answer that is
// truncated, compressed, oversized, without status, with a status but no
// message, with headers without end, or never sent fails the probe with
// its reason, within the timeout; none passes.
func TestGRPCProbeAgainstBrokenInstances(t *testing.T) {
	head := func(fr *http2.Framer, id uint32, end bool) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: end,
			BlockFragment: hpackBlock(":status", "200", "content-type", "application/grpc")})
	}
	trailers := func(fr *http2.Framer, id uint32, status string) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: true, BlockFragment: hpackBlock("grpc-status", status)})
	}
	serving := []byte{0, 0, 0, 0, 2, 0x08, 0x01}
	big := strings.Repeat("v", 16<<10)
	cases := []struct {
		name   string
		answer func(fr *http2.Framer, id uint32)
		want   string
	}{
		{"serving", func(fr *http2.Framer, id uint32) {
			head(fr, id, false)
			fr.WriteData(id, false, serving)
			trailers(fr, id, "0")
		}, "L7OK SERVING"},
		{"truncated message", func(fr *http2.Framer, id uint32) {
			head(fr, id, false)
			fr.WriteData(id, false, serving[:6])
			trailers(fr, id, "0")
		}, "L7RSP a truncated gRPC message"},
		{"compressed message", func(fr *http2.Framer, id uint32) {
			head(fr, id, false)
			fr.WriteData(id, false, append([]byte{1}, serving[1:]...))
			trailers(fr, id, "0")
		}, "L7RSP a compressed gRPC message"},
		{"oversized message", func(fr *http2.Framer, id uint32) {
			head(fr, id, false)
			for range 8 {
				fr.WriteData(id, false, make([]byte, 8<<10))
			}
			trailers(fr, id, "0")
		}, "L7RSP"},
		{"no status", func(fr *http2.Framer, id uint32) {
			head(fr, id, false)
			fr.WriteData(id, true, serving)
		}, "L7RSP no grpc-status"},
		{"status without message", func(fr *http2.Framer, id uint32) {
			head(fr, id, false)
			trailers(fr, id, "0")
		}, "L7RSP no gRPC message in the answer"},
		{"UNAVAILABLE", func(fr *http2.Framer, id uint32) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: true,
				BlockFragment: hpackBlock(":status", "200", "content-type", "application/grpc", "grpc-status", "14", "grpc-message", big[:1000])})
		}, "L7STS grpc-status 14 " + strings.Repeat("v", 200)},
		{"endless CONTINUATION", func(fr *http2.Framer, id uint32) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hpackBlock(":status", "200")})
			for range 1000 {
				if fr.WriteContinuation(id, false, hpackBlock("x-junk", big)) != nil {
					return
				}
			}
		}, "L7RSP"},
		{"no answer", func(*http2.Framer, uint32) {}, "L7TOUT"},
	}
	c := New(Config{}, func(Target, bool, Check) {})
	t.Cleanup(c.Close)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawGRPC(t, tc.answer)
			cfg := Config{Type: TypeGRPC, Timeout: 500 * time.Millisecond, Transports: map[string]Transport{"blue": {Protocol: "h2c"}}}
			if ck := try(c, cfg, "blue", addr); !strings.HasPrefix(ck.String(), tc.want) {
				t.Errorf("got %q, want %q", ck, tc.want)
			}
		})
	}
}

// TestProbeOfSilentTLSInstance: an instance that accepts and never
// answers the handshake fails L6TOUT within the timeout, over HTTP/1.1
// and HTTP/2.
func TestProbeOfSilentTLSInstance(t *testing.T) {
	// It reads what the probe sends and never answers.
	addr := vstest.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	c := New(Config{}, func(Target, bool, Check) {})
	t.Cleanup(c.Close)
	for _, proto := range []string{"http1", "h2"} {
		cfg := Config{Type: TypeHTTP, Path: "/", Timeout: 300 * time.Millisecond,
			Transports: map[string]Transport{"blue": {Protocol: proto, TLS: &tls.Config{ServerName: "app.internal"}}}}
		if ck := try(c, cfg, "blue", addr); ck.Code != L6TOUT {
			t.Errorf("%s: %s, want L6TOUT", proto, ck)
		}
	}
}
