package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/route"
)

// rawRequest sends req as it is on a new connection to addr and returns
// the answer's status and Location (0 when the connection closed without
// one).
func rawRequest(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, ""
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestRedirectToHTTPS: a redirecting listener answers 308 to https on the
// target port, the host from Host (its port replaced), the path and query
// as sent; a Host that is not a plain host[:port] is a 400, never a
// Location elsewhere; the requests count as redirects, in no slot.
func TestRedirectToHTTPS(t *testing.T) {
	b := newInstance(t, "blue", "b1", nil)
	p := New(Options{RedirectPort: [2]int{0, 8443}})
	p.Apply(table(1, []*route.Instance{b.inst}, []*route.Instance{b.inst}))
	prod, stage := serve(t, p)
	addr := strings.TrimPrefix(stage, "http://")
	for _, tc := range []struct {
		name, req string
		status    int
		loc       string
	}{
		{"plain", "GET /a/b?x=1&y=%2F HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 308, "https://www.example.com:8443/a/b?x=1&y=%2F"},
		{"port replaced", "POST /form HTTP/1.1\r\nHost: Example.COM:8080\r\nContent-Length: 3\r\n\r\nabc", 308, "https://example.com:8443/form"},
		{"ipv4", "GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n", 308, "https://192.0.2.1:8443/"},
		{"ipv6", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", 308, "https://[2001:db8::1]:8443/"},
		{"absolute form", "GET http://www.example.com/p HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 308, "https://www.example.com:8443/p"},
		{"double slash path", "GET //evil.example/x HTTP/1.1\r\nHost: www.example.com\r\n\r\n", 308, "https://www.example.com:8443//evil.example/x"},
		{"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 400, ""},
		{"userinfo", "GET / HTTP/1.1\r\nHost: user@evil.example\r\n\r\n", 400, ""},
		{"path in host", "GET / HTTP/1.1\r\nHost: evil.example/x\r\n\r\n", 400, ""},
		{"backslash", "GET / HTTP/1.1\r\nHost: evil.example\\x\r\n\r\n", 400, ""},
		{"space", "GET / HTTP/1.1\r\nHost: evil example\r\n\r\n", 400, ""},
		{"bad port", "GET / HTTP/1.1\r\nHost: example.com:99999\r\n\r\n", 400, ""},
		{"empty port", "GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n", 400, ""},
		{"zone", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 400, ""},
		{"unbracketed ipv6", "GET / HTTP/1.1\r\nHost: 2001:db8::1\r\n\r\n", 400, ""},
		{"percent", "GET / HTTP/1.1\r\nHost: evil%2eexample\r\n\r\n", 400, ""},
		{"scheme in host", "GET / HTTP/1.1\r\nHost: javascript:alert(1)\r\n\r\n", 400, ""},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, ""},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 400, ""},
		{"long host", "GET / HTTP/1.1\r\nHost: " + strings.Repeat("a", 400) + "\r\n\r\n", 400, ""},
	} {
		status, loc := rawRequest(t, addr, tc.req)
		if status != tc.status || loc != tc.loc {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, loc, tc.status, tc.loc)
		}
	}
	if n := p.Redirected(route.Stage); n < 6 {
		t.Errorf("redirected %d, want the 308s and 400s counted", n)
	}
	if n := b.inst.Served(route.Stage); n != 0 {
		t.Errorf("the instance served %d requests of the redirecting listener, want 0", n)
	}
	for name, c := range p.Counters(route.Stage) {
		if name != route.NoSlot && c.Requests() != 0 { // NoSlot: heads h1 refused itself
			t.Errorf("a slot counted %d requests of the redirecting listener, want 0", c.Requests())
		}
	}
	if _, body := get(t, prod); body != "b1" { // the other listener forwards
		t.Errorf("prod answered %q, want b1", body)
	}
	// Port 443 is left out.
	p443 := New(Options{RedirectPort: [2]int{443, 0}})
	prod, _ = serve(t, p443)
	if status, loc := rawRequest(t, strings.TrimPrefix(prod, "http://"), "GET /x HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"); status != 308 || loc != "https://example.com/x" {
		t.Errorf("to 443: %d %q", status, loc)
	}
}
