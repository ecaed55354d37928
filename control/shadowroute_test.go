package control_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/wire"
)

// A slot that a version route sends prod requests to takes prod traffic:
// a shadow cannot be started toward it (a route of the configuration or
// one set through the API), and a route set toward the target of a
// running shadow ends the shadow in the same change.
func TestAShadowNeverGoesToASlotARouteSendsProdTo(t *testing.T) {
	blue, green, red := slotServer(t, "blue"), slotServer(t, "green"), slotServer(t, "red")
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	plane := &shadowPlane{}
	ctrl, err := control.New(context.Background(), control.Config{
		Slots:  []control.Slot{{Name: "blue", Addrs: []string{blue}}, {Name: "green", Addrs: []string{green}}, {Name: "red", Addrs: []string{red}}},
		Active: "blue", Store: st, Shadow: plane,
		Routes: []route.Route{{PathPrefix: "/beta/", Slot: "red"}},
		Health: health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.Close)
	ctx := context.Background()
	if _, err := ctrl.StartShadow(ctx, wire.ShadowRequest{To: "red", Percent: 100}); err == nil || !strings.Contains(err.Error(), "prod traffic") {
		t.Errorf("shadow to red, which the configuration routes /beta/ to: %v, want refused as taking prod traffic", err)
	}
	if st := ctrl.Status(); st.Shadow != nil {
		t.Fatalf("a refused start left a shadow: %+v", st.Shadow)
	}
	if res, err := ctrl.StartShadow(ctx, wire.ShadowRequest{To: "green", Percent: 100}); err != nil || !res.Applied {
		t.Fatalf("shadow to green: %+v, %v", res, err)
	}
	if _, err := ctrl.SetRoute(ctx, wire.RouteRequest{PathPrefix: "/next/", Slot: "green"}); err != nil {
		t.Fatalf("route to green: %v", err)
	}
	if st := ctrl.Status(); st.Shadow != nil || plane.last() != nil {
		t.Errorf("a route sends prod requests to green now, and the shadow to green runs on: %+v", st.Shadow)
	}
	if _, err := ctrl.StartShadow(ctx, wire.ShadowRequest{To: "green", Percent: 100}); err == nil || !strings.Contains(err.Error(), "prod traffic") {
		t.Errorf("shadow to green, which an API route sends /next/ to: %v, want refused as taking prod traffic", err)
	}
	// A reload whose configuration routes prod requests to the target
	// ends the shadow too.
	if _, err := ctrl.RemoveRoute(ctx, wire.RouteRequest{PathPrefix: "/next/"}); err != nil {
		t.Fatalf("remove the route to green: %v", err)
	}
	if res, err := ctrl.StartShadow(ctx, wire.ShadowRequest{To: "green", Percent: 100}); err != nil || !res.Applied {
		t.Fatalf("shadow to green once no route sends prod to it: %+v, %v", res, err)
	}
	_, err = ctrl.Reload(ctx, control.Reload{
		Slots:  []control.Slot{{Name: "blue", Addrs: []string{blue}}, {Name: "green", Addrs: []string{green}}, {Name: "red", Addrs: []string{red}}},
		Health: health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
		Routes: []route.Route{{PathPrefix: "/beta/", Slot: "red"}, {PathPrefix: "/gamma/", Slot: "green"}},
	})
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if st := ctrl.Status(); st.Shadow != nil || plane.last() != nil {
		t.Errorf("the configuration routes /gamma/ to green now, and the shadow to green runs on: %+v", st.Shadow)
	}
}
