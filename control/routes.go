package control

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

var headerNameRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// routeOf checks r and returns the route it asks for.
func routeOf(r wire.RouteRequest) (state.Route, error) {
	if err := route.CheckPrefix(r.PathPrefix); err != nil {
		return state.Route{}, fmt.Errorf("path_prefix: %w", err)
	}
	switch {
	case r.Header != "" && !headerNameRE.MatchString(r.Header):
		return state.Route{}, fmt.Errorf("header: want a header name such as X-Api-Version, got %q", r.Header)
	case r.Header == "" && r.Value != "":
		return state.Route{}, fmt.Errorf("value: a value needs a header to match it in")
	case len(r.Value) > 256:
		return state.Route{}, fmt.Errorf("value: at most 256 bytes")
	}
	return state.Route{PathPrefix: r.PathPrefix, Header: r.Header, Value: r.Value, Slot: r.Slot}, nil
}

// SetRoute adds a version route, or replaces the one that matches the same
// requests, as one compare-and-swap recorded in the history.
func (c *Controller) SetRoute(ctx context.Context, req wire.RouteRequest) (wire.Change, error) {
	r, err := routeOf(req)
	if err != nil {
		return wire.Change{Operation: "route"}, invalid(err)
	}
	if err := c.knownSlot(req.Slot); err != nil {
		return wire.Change{Operation: "route"}, err
	}
	return c.change(ctx, operation{name: "route", req: req.ChangeRequest, changes: []string{"route: " + describeRoute(r) + " → " + r.Slot},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			res.To = r.Slot
			return st.SetRoute(r, slices.Contains(c.slotNamesLocked(), r.Slot))
		}})
}

// RemoveRoute removes the API-set route that matches the same requests as
// req.
func (c *Controller) RemoveRoute(ctx context.Context, req wire.RouteRequest) (wire.Change, error) {
	r, err := routeOf(req)
	if err != nil {
		return wire.Change{Operation: "route remove"}, invalid(err)
	}
	return c.change(ctx, operation{name: "route remove", req: req.ChangeRequest, changes: []string{"route: " + describeRoute(r) + " removed"},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			res.To = st.Active
			return st.RemoveRoute(r)
		}})
}

func describeRoute(r state.Route) string {
	d := r.PathPrefix + "*"
	if r.Header != "" {
		d += " with " + r.Header + ": " + r.Value
	}
	return d
}

// routesLocked returns the routes in force: the configuration's, with
// those set through the API added, replacing one that matches the same
// requests. Each says where it comes from.
func (c *Controller) routesLocked(st state.State) (routes []route.Route, fromAPI []bool) {
	for _, r := range c.cfg.Routes {
		sr := state.Route{PathPrefix: r.PathPrefix, Header: r.Header, Value: r.Value, Slot: r.Slot}
		if slices.ContainsFunc(st.Routes, sr.Same) {
			continue
		}
		routes, fromAPI = append(routes, r), append(fromAPI, false)
	}
	for _, r := range st.Routes {
		routes = append(routes, route.Route{PathPrefix: r.PathPrefix, Header: r.Header, Value: r.Value, Slot: r.Slot})
		fromAPI = append(fromAPI, true)
	}
	return routes, fromAPI
}
