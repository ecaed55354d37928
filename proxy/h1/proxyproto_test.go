package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/proxy/proxyproto"
)

// echoRemote answers every request with its RemoteAddr.
var echoRemote = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) })

// startProxied serves s behind a PROXY protocol listener in mode that
// trusts trusted (with TLS when pool is not nil: the client's roots are
// put in it). It returns the address and the listener.
func startProxied(t *testing.T, s *Server, mode proxyproto.Mode, trusted func(netip.Addr) bool, pool *x509.CertPool) (string, *proxyproto.Listener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.init()
	pl := &proxyproto.Listener{Listener: ln, Mode: mode, Trusted: trusted}
	var serveLn net.Listener = pl
	if pool != nil {
		cert := tlstest.Valid(t, t.TempDir(), "127.0.0.1")
		pool.AddCert(cert.X509)
		serveLn = tls.NewListener(pl, &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(serveLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only ends a hung shutdown
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return ln.Addr().String(), pl
}

func trustAll(netip.Addr) bool  { return true }
func trustNone(netip.Addr) bool { return false }

// getOver sends a GET on c (after the bytes in pre, in the same write)
// and returns the body of the answer, or the error.
func getOver(c net.Conn, pre string) (string, error) {
	if _, err := io.WriteString(c, pre+"GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), &statusErr{resp.StatusCode}
	}
	return string(b), err
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return http.StatusText(e.code) }

var v2Header = string(proxyproto.AppendV2(nil, netip.MustParseAddrPort("203.0.113.9:4000"), netip.MustParseAddrPort("10.0.0.1:443")))

// TestProxyHeaderNamesTheClient: the address a trusted peer's header
// names is the request's RemoteAddr, for every request of the connection,
// v1 and v2, cleartext and TLS (the header before the handshake), whether
// the header comes alone or with the request in one write.
func TestProxyHeaderNamesTheClient(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		var pool *x509.CertPool
		if tlsOn {
			pool = x509.NewCertPool()
		}
		addr, _ := startProxied(t, &Server{Handler: echoRemote}, proxyproto.Require, trustAll, pool)
		for _, tc := range []struct{ name, header, want string }{
			{"v1", "PROXY TCP4 198.51.100.4 10.0.0.1 5555 443\r\n", "198.51.100.4:5555"},
			{"v1 ipv6", "PROXY TCP6 2001:db8::4 2001:db8::1 5555 443\r\n", "[2001:db8::4]:5555"},
			{"v2", v2Header, "203.0.113.9:4000"},
			{"v1 unknown", "PROXY UNKNOWN\r\n", "127.0.0.1:"},
		} {
			for _, split := range []bool{false, true} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				pre := tc.header
				if split || tlsOn {
					io.WriteString(c, tc.header)
					pre = ""
				}
				if tlsOn {
					tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
					c = tc
				}
				for i := range 2 {
					got, err := getOver(c, pre)
					if err != nil || !strings.HasPrefix(got, tc.want) {
						t.Fatalf("tls=%v %s split=%v request %d: %q, %v; want %s", tlsOn, tc.name, split, i, got, err, tc.want)
					}
					pre = ""
				}
				c.Close()
			}
		}
	}
}

// TestProxyAcceptWithoutHeader: under accept a trusted peer may come
// without a header, and keeps its own address.
func TestProxyAcceptWithoutHeader(t *testing.T) {
	addr, _ := startProxied(t, &Server{Handler: echoRemote}, proxyproto.Accept, trustAll, nil)
	c := dialFrom(t, "127.0.0.1", addr)
	if got, err := getOver(c, ""); err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("got %q, %v; want the peer's address", got, err)
	}
}

// TestProxyUntrustedPeer: a peer not trusted cannot name a client: under
// require its connection is closed unread; under accept its header is
// what HTTP makes of it (a 400, then the connection closes), and a plain
// request of its keeps its own address.
func TestProxyUntrustedPeer(t *testing.T) {
	addr, pl := startProxied(t, &Server{Handler: echoRemote}, proxyproto.Require, trustNone, nil)
	c := dialFrom(t, "127.0.0.1", addr)
	io.WriteString(c, "PROXY TCP4 198.51.100.4 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !closed(c, 10*time.Second) {
		t.Fatal("require: a header from a peer not trusted was not closed")
	}
	if pl.Refused.Load() != 1 {
		t.Errorf("refused %d, want 1", pl.Refused.Load())
	}
	addr, _ = startProxied(t, &Server{Handler: echoRemote}, proxyproto.Accept, trustNone, nil)
	c = dialFrom(t, "127.0.0.1", addr)
	if got, err := getOver(c, "PROXY TCP4 198.51.100.4 10.0.0.1 5555 443\r\n"); err == nil || strings.Contains(got, "198.51.100.4") {
		t.Fatalf("accept: a header from a peer not trusted was taken: %q, %v", got, err)
	}
	if !closed(c, 10*time.Second) {
		t.Fatal("accept: the connection that sent a header unasked stayed open")
	}
	c = dialFrom(t, "127.0.0.1", addr)
	if got, err := getOver(c, ""); err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("accept: a plain request from a peer not trusted: %q, %v", got, err)
	}
}

// proxiedVictim is a victim whose connections start with a v1 header.
func proxiedVictim(addr string) *victim {
	v := newVictim(addr, 10*time.Second)
	v.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, a)
		if err == nil {
			_, err = io.WriteString(c, "PROXY TCP4 192.0.2.1 10.0.0.1 1000 80\r\n")
		}
		return c, err
	}
	return v
}

// TestProxyHostileHeaders: each broken header (truncated, overlong, a huge
// v2 length, garbage, none at all, one never finished, a header twice)
// closes its own connection, by ReadHeaderTimeout at the latest, and no
// other client's request fails meanwhile.
func TestProxyHostileHeaders(t *testing.T) {
	huge := string(proxyproto.AppendV2(nil, netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("6.7.8.9:10")))
	huge = huge[:14] + "\xff\xff" + huge[16:] + strings.Repeat("\x00", 2000)
	v1 := "PROXY TCP4 198.51.100.4 10.0.0.1 5555 443\r\n"
	for _, tc := range []struct {
		name string
		send string
	}{
		{"truncated v1", v1[:20]},
		{"truncated v2", v2Header[:20]},
		{"v2 signature only", v2Header[:12]},
		{"oversized v1 line", "PROXY TCP4 " + strings.Repeat("9", 4000) + "\r\n"},
		{"v2 huge length", huge},
		{"garbage", "\x00\x01\x02garbage\r\n\r\n"},
		{"no header", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"nothing", ""},
		{"header twice", v1 + v1 + "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"v1 bad address", "PROXY TCP4 198.51.100.400 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{Handler: echoRemote, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 600 * time.Millisecond}
			addr, _ := startProxied(t, s, proxyproto.Require, trustAll, nil)
			var attackers []net.Conn
			for range 20 {
				c := dialFrom(t, "127.0.0.1", addr)
				io.WriteString(c, tc.send)
				attackers = append(attackers, c)
			}
			v := proxiedVictim(addr)
			v.run(5, 4)
			for i, c := range attackers {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(c)
				if strings.Contains(string(b), "198.51.100.4") || strings.Contains(string(b), " 200 ") {
					t.Fatalf("attacker %d was answered: %q", i, b)
				}
				if !closed(c, 10*time.Second) {
					t.Fatalf("attacker %d: not closed", i)
				}
			}
			v.check(t)
		})
	}
}

// TestProxySlowHeaderIsBounded: a header sent a byte at a time, never
// finished, is closed within ReadHeaderTimeout of its first byte, whatever
// the client keeps sending; a silent connection meanwhile is only idle.
func TestProxySlowHeaderIsBounded(t *testing.T) {
	s := &Server{Handler: echoRemote, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Minute}
	addr, _ := startProxied(t, s, proxyproto.Require, trustAll, nil)
	c := dialFrom(t, "127.0.0.1", addr)
	slow := "PROXY TCP4 198.51.100.4 10.0.0.1 5555 443" + strings.Repeat(" ", 60)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	shut := false
	for i := 0; i < len(slow) && !shut; i++ {
		<-tick.C
		if _, err := io.WriteString(c, slow[i:i+1]); err != nil {
			shut = true
		}
	}
	if !shut && !closed(c, 10*time.Second) {
		t.Fatal("a header trickled byte by byte was not closed")
	}
	silent := dialFrom(t, "127.0.0.1", addr)
	if closed(silent, 500*time.Millisecond) {
		t.Fatal("a silent connection was closed before IdleTimeout")
	}
	silent.SetDeadline(time.Now().Add(20 * time.Second))
	if got, err := getOver(silent, "PROXY TCP4 198.51.100.5 10.0.0.1 5555 443\r\n"); err != nil || !strings.HasPrefix(got, "198.51.100.5:") {
		t.Fatalf("the silent connection, then its header and request: %q, %v", got, err)
	}
}

// TestProxyPerClientCapIsTheHeaders: the per-client cap counts a
// connection against the client its header names, not against the peer
// (the load balancer, whose connections carry every client).
func TestProxyPerClientCapIsTheHeaders(t *testing.T) {
	s := &Server{Handler: echoRemote, MaxConnsPerClient: 2}
	addr, _ := startProxied(t, s, proxyproto.Require, trustAll, nil)
	header := func(client string) string { return "PROXY TCP4 " + client + " 10.0.0.1 5555 443\r\n" }
	for i := range 2 {
		c := dialFrom(t, "127.0.0.1", addr)
		if got, err := getOver(c, header("198.51.100.7")); err != nil {
			t.Fatalf("connection %d of 2: %q, %v", i+1, got, err)
		}
		busy(c)
	}
	c := dialFrom(t, "127.0.0.1", addr)
	if _, err := getOver(c, header("198.51.100.7")); err == nil {
		t.Fatal("a third connection of a client holding its cap of 2 was answered")
	}
	for i := range 3 { // others behind the same balancer go on
		c := dialFrom(t, "127.0.0.1", addr)
		if got, err := getOver(c, header("198.51.100.8")); err != nil && i < 2 {
			t.Fatalf("another client behind the balancer, connection %d: %q, %v", i+1, got, err)
		}
		busy(c)
	}
	if s.Refused() < 1 {
		t.Errorf("refused %d, want at least 1", s.Refused())
	}
}
