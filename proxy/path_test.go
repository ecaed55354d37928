package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/route"
)

// TestOneCanonicalPath: a request's path is made canonical once, before
// routing, and the instance receives exactly the path that was routed (with
// the query untouched), or the request is refused with a 400. Dot segments,
// encoded dots, merged slashes and absolute-form targets can neither carry a
// request out of a route to a slot that is not live (/api/2.0/../../admin
// reaching /admin on green) nor past a route (//legacy/x served by the
// active slot as /legacy/x). Targets net/http's client would rewrite are
// written on raw connections.
func TestOneCanonicalPath(t *testing.T) {
	spec := route.Spec{Routable: map[string][]*route.Instance{}}
	for _, name := range []string{"blue", "green", "beta", "legacy"} {
		in := newInstance(t, name, name, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name+" "+r.RequestURI)
		})
		spec.Routable[name] = []*route.Instance{in.inst}
	}
	spec.Listeners[route.Prod] = []route.Weighted{{Slot: "blue", Weight: 1}}
	spec.Listeners[route.Stage] = []route.Weighted{{Slot: "green", Weight: 1}}
	spec.Routes = []route.Route{
		{PathPrefix: "/api/2.0/", Slot: "green"},
		{PathPrefix: "/api/2.0/", Header: "X-Beta", Value: "1", Slot: "beta"},
		{PathPrefix: "/legacy/", Slot: "legacy"},
	}
	p := New(Options{})
	p.Apply(route.Build(spec))
	prod, stage := serve(t, p)

	// want is "slot target-the-instance-received", or "400".
	cases := []struct{ target, header, want string }{
		// Out of a route: dot segments, raw and encoded.
		{"/api/2.0/../../admin", "", "blue /admin"},
		{"/api/2.0/%2e%2e/%2e%2e/admin", "", "blue /admin"},
		{"/api/2.0/%2E%2E/%2E%2E/admin", "", "blue /admin"},
		{"/api/2.0/.%2e/.%2E/admin", "", "blue /admin"},
		{"/api/2.0/x/../../../admin", "", "blue /admin"},
		{"/api/2.0/..%2F..%2Fadmin", "", "400"},
		{"/api/2.0/..%2f..%2fadmin", "", "400"},
		{"/api/2.0/..%5C..%5Cadmin", "", "400"},
		{"/api/2.0/..\\..\\admin", "", "400"},
		{"/api/2.0/..;/..;/admin", "", "400"},
		{"/api/2.0/../../../admin", "", "400"},
		{"/../admin", "", "400"},
		{"/api/2.0/x%00", "", "400"},
		{"http://shop.example/api/2.0/../../admin", "", "blue /admin"},
		{"HTTP://shop.example/api/2.0/%2e%2e/%2e%2e/admin?q=1", "", "blue /admin?q=1"},
		{"/api/2.0/../../admin", "X-Beta: 1", "blue /admin"},
		{"/api/2.0/%2e%2e/%2e%2e/admin", "X-Beta: 1", "blue /admin"},
		// Into a route, whatever the spelling.
		{"/api/2.0/x", "", "green /api/2.0/x"},
		{"/api/2.0", "", "green /api/2.0"},
		{"/api//2.0/x", "", "green /api/2.0/x"},
		{"/api/./2.0/x", "", "green /api/2.0/x"},
		{"/api/2.0/./x/", "", "green /api/2.0/x/"},
		{"/%61pi/2%2E0/x", "", "green /api/2.0/x"},
		{"/api/2.0/x", "X-Beta: 1", "beta /api/2.0/x"},
		{"/api//2.0/x", "X-Beta: 1", "beta /api/2.0/x"},
		{"http://shop.example//api/2.0/x?a=b", "X-Beta: 1", "beta /api/2.0/x?a=b"},
		{"//legacy/x", "", "legacy /legacy/x"},
		{"/./legacy/x", "", "legacy /legacy/x"},
		{"/a/../legacy/x", "", "legacy /legacy/x"},
		{"/%2e/legacy/x", "", "legacy /legacy/x"},
		{"/a/%2E%2E/legacy/x", "", "legacy /legacy/x"},
		{"/%6Cegacy/x", "", "legacy /legacy/x"},
		{"/legacy", "", "legacy /legacy"},
		{"/legacy/.", "", "legacy /legacy/"},
		{"/legacy/x/..", "", "legacy /legacy/"},
		{"http://shop.example//legacy/./x", "", "legacy /legacy/x"},
		// Segment boundaries and matrix parameters.
		{"/legacyx", "", "blue /legacyx"},
		{"/legacy;v=1/x", "", "400"},
		{"/legacy%3Bv=1/x", "", "400"},
		{"/legacy/x;v=1", "", "legacy /legacy/x;v=1"},
		{"/other;v=1/x", "", "blue /other;v=1/x"},
		// The query is forwarded as it came; the path's escapes are
		// canonical (upper-case hex, unreserved characters decoded).
		{"/legacy/x?a=../b&c=%2F&d=%2e", "", "legacy /legacy/x?a=../b&c=%2F&d=%2e"},
		{"/legacy/%7bx%7D", "", "legacy /legacy/%7Bx%7D"},
		{"/legacy/caf%c3%a9", "", "legacy /legacy/caf%C3%A9"},
		{"/legacy/a%20b?", "", "legacy /legacy/a%20b?"},
		{"/", "", "blue /"},
		{"http://shop.example", "", "blue /"},
		{"http://shop.example?x=1", "", "blue /?x=1"},
	}
	for _, c := range cases {
		t.Run(c.target+" "+c.header, func(t *testing.T) {
			head := "GET " + c.target + " HTTP/1.1\r\nHost: shop.example\r\n"
			if c.header != "" {
				head += c.header + "\r\n"
			}
			status, body := raw(t, prod, head+"\r\n")
			got := body
			if !strings.HasPrefix(status, "200") {
				got = status[:3]
			}
			if got != c.want {
				t.Fatalf("got %s %q, want %q", status, body, c.want)
			}
			if c.want == "400" && !strings.HasPrefix(body, "vipswap: ") {
				t.Fatalf("the 400 says %q, want vipswap's one-line reason", body)
			}
		})
	}

	t.Run("stage forwards the canonical path too", func(t *testing.T) {
		status, body := raw(t, stage, "GET //legacy/./x/../y?q=%2e HTTP/1.1\r\nHost: x\r\n\r\n")
		if status != "200 OK" || body != "green /legacy/y?q=%2e" {
			t.Fatalf("got %s %q, want green /legacy/y?q=%%2e", status, body)
		}
		status, _ = raw(t, stage, "GET /a/..%2Fb HTTP/1.1\r\nHost: x\r\n\r\n")
		if !strings.HasPrefix(status, "400") {
			t.Fatalf("got %s for an encoded slash on stage, want 400", status)
		}
	})
	t.Run("OPTIONS * is forwarded as it is", func(t *testing.T) {
		// net/http's server answers OPTIONS * itself: this instance reads
		// the request line.
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(r.RequestURI), r.RequestURI)
			return true
		})
		prod, _ := proxyOf(t, Options{}, inst)
		status, body := raw(t, prod, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
		if status != "200 OK" || body != "*" {
			t.Fatalf("got %s %q, want *", status, body)
		}
	})
	t.Run("the pin header is unaffected", func(t *testing.T) {
		pinned := New(Options{PinHeader: "X-Vipswap-Slot"})
		pinned.Apply(route.Build(spec))
		pprod, _ := serve(t, pinned)
		status, body := raw(t, pprod, "GET /api/2.0/../x HTTP/1.1\r\nHost: x\r\nX-Vipswap-Slot: legacy\r\n\r\n")
		if status != "200 OK" || body != "legacy /api/x" {
			t.Fatalf("got %s %q, want legacy /api/x", status, body)
		}
	})
}

// Reading a canonical target and routing it, the common case, allocates
// nothing: the request line to the instance is the client's own target.
func TestCanonicalTargetDoesNotAllocate(t *testing.T) {
	var spec route.Spec
	spec.Listeners[route.Prod] = []route.Weighted{{Slot: "blue", Weight: 1}}
	spec.Routes = []route.Route{{PathPrefix: "/api/1.0/", Slot: "blue"}, {PathPrefix: "/api/2.0/", Slot: "green"}}
	p := New(Options{})
	p.Apply(route.Build(spec))
	for _, target := range []string{"/api/2.0/users/42?fields=name", "/", "/static/app.js?v=3", "/api/2.0"} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			t.Fatal(err)
		}
		rq := &request{l: route.Prod, table: p.table.Load(), o: p.opts.Load()}
		n := testing.AllocsPerRun(1000, func() {
			if err := rq.target(r); err != nil {
				t.Fatal(err)
			}
			if err := p.choose(r, rq); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("reading and routing %s allocates %v times", target, n)
		}
		if rq.uri != target {
			t.Errorf("the target for the instance is %q, want %q", rq.uri, target)
		}
	}
}
