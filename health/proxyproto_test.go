package health

import (
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/vipswap/vipswap/proxy/proxyproto"
)

// TestProbeSendsProxyHeader: to an instance that requires the PROXY
// header, a probe passes with one (v1 UNKNOWN, v2 LOCAL: it names no
// client) and fails without.
func TestProbeSendsProxyHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, Mode: proxyproto.Require,
		Trusted: proxyproto.TrustList([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go srv.Serve(pl)
	t.Cleanup(func() { srv.Close() })
	c, _ := newChecker(t, 1, 1)
	target := Target{Slot: "blue", Addr: ln.Addr().String()}
	for _, tc := range []struct {
		pp   int
		pass bool
	}{{1, true}, {2, true}, {0, false}} {
		ck := c.Try(t.Context(), Config{Path: "/api/ping", Timeout: 5 * time.Second, ProxyProtocol: map[string]int{"blue": tc.pp}}, target)
		if (ck.Code == L7OK) != tc.pass {
			t.Errorf("PROXY v%d: %s, want pass=%v", tc.pp, ck, tc.pass)
		}
	}
}
