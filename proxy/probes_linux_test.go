//go:build linux

package proxy

import (
	"crypto/tls"
	"net"
	"syscall"
	"testing"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/route"
)

// keepAliveTo returns SO_KEEPALIVE of each socket of this process
// connected to port (the proxy's connections to an instance there).
func keepAliveTo(t *testing.T, port int) []int {
	t.Helper()
	var got []int
	for fd := 3; fd < 4096; fd++ {
		sa, err := syscall.Getpeername(fd)
		if err != nil {
			continue
		}
		if in4, ok := sa.(*syscall.SockaddrInet4); !ok || in4.Port != port {
			continue
		}
		v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got
}

// TestInstanceKeepAliveProbesOnlyOnTunnels: instance connections are
// dialled without TCP keep-alive probes (what waits on them has a
// timeout), and a tunnel, which has none, turns them on.
func TestInstanceKeepAliveProbesOnlyOnTunnels(t *testing.T) {
	in := echoUpgrader(t)
	port := in.Listener.Addr().(*net.TCPAddr).Port
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	prod, _ := serve(t, p)
	if code, body := get(t, prod); code != 200 || body != "plain" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if got := keepAliveTo(t, port); len(got) != 1 || got[0] != 0 {
		t.Fatalf("SO_KEEPALIVE of the pooled instance connection: %v, want [0]", got)
	}
	upgradeToEcho(t, prod)
	// The tunnel took the pooled connection (or a new one): one with
	// probes, and no other.
	got := keepAliveTo(t, port)
	on := 0
	for _, v := range got {
		if v != 0 {
			on++
		}
	}
	if on != 1 {
		t.Fatalf("SO_KEEPALIVE of the instance connections with a tunnel open: %v, want one on", got)
	}
}

// TestTunnelProbesATLSInstanceConnection: a tunnel to an instance reached
// over TLS turns the probes on for the TCP connection under the TLS one.
func TestTunnelProbesATLSInstanceConnection(t *testing.T) {
	cert := tlstest.Valid(t, t.TempDir(), "app.internal")
	in := newUpstreamInstance(t, "blue", "b1", HTTP1, &cert, nil, echoUpgrade)
	port := in.Listener.Addr().(*net.TCPAddr).Port
	_, prod := proxyWith(t, &Upstream{Protocol: HTTP1, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "probes"}, Options{}, in.inst)
	upgradeToEcho(t, prod)
	if got := keepAliveTo(t, port); len(got) != 1 || got[0] == 0 {
		t.Fatalf("SO_KEEPALIVE of the TLS instance connections with a tunnel open: %v, want one on", got)
	}
}
