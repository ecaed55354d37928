package control_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// TestRoutePrefixes: a route's prefix is refused, with what is wrong with
// it, when no canonical request path could ever match it (dot segments,
// //, escapes, ;), and the refusal changes nothing; /api and /api/ are
// the same route, so setting one replaces the other.
func TestRoutePrefixes(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	ctx := context.Background()
	for _, c := range []struct{ prefix, reason string }{
		{"/api/2.0/../../admin", "dot segment (..)"},
		{"/./api", "dot segment (.)"},
		{"//legacy/", "empty segment (//)"},
		{"/api%2F2.0/", "write the prefix decoded"},
		{"/legacy;v=1/", "routes do not match ;parameters"},
		{`/a\b`, "backslash"},
		{"api/", "want a path starting with /"},
	} {
		before := f.ctrl.Status()
		_, err := f.ctrl.SetRoute(ctx, wire.RouteRequest{PathPrefix: c.prefix, Slot: "green"})
		var ce *control.Error
		if !errors.As(err, &ce) || ce.Kind != control.Invalid || !strings.HasPrefix(err.Error(), "path_prefix: ") || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("route set %q: %v, want it refused as invalid, saying %q", c.prefix, err, c.reason)
		}
		if after := f.ctrl.Status(); after.Revision != before.Revision || len(after.Routes) != 0 {
			t.Fatalf("a refused route changed the state: revision %d -> %d, routes %+v", before.Revision, after.Revision, after.Routes)
		}
	}

	if _, err := f.ctrl.SetRoute(ctx, wire.RouteRequest{PathPrefix: "/api/", Slot: "green"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ctrl.SetRoute(ctx, wire.RouteRequest{PathPrefix: "/api", Slot: "blue"}); err != nil {
		t.Fatal(err)
	}
	routes := f.ctrl.Status().Routes
	if len(routes) != 1 || routes[0].PathPrefix != "/api" || routes[0].Slot != "blue" {
		t.Fatalf("routes after setting /api/ then /api: %+v, want /api to blue alone", routes)
	}
	for _, path := range []string{"/api", "/api/", "/api/x"} {
		if s, _ := f.plane.last().Routed(route.Path{Decoded: path, Escaped: path}, nil); s == nil || s.Name != "blue" {
			t.Errorf("%s is not routed to blue", path)
		}
	}
	if s, _ := f.plane.last().Routed(route.Path{Decoded: "/apix", Escaped: "/apix"}, nil); s != nil {
		t.Errorf("/apix is routed to %s, want no route", s.Name)
	}
	if _, err := f.ctrl.RemoveRoute(ctx, wire.RouteRequest{PathPrefix: "/api/"}); err != nil {
		t.Fatalf("removing /api/ (the same route as /api): %v", err)
	}
	if routes := f.ctrl.Status().Routes; len(routes) != 0 {
		t.Fatalf("routes after removing it: %+v", routes)
	}
}
