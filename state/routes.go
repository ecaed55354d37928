package state

import (
	"slices"
	"strings"
)

// Route sends the prod requests whose path is PathPrefix or below it (and
// that carry Header with Value, when Header is set) to Slot, whatever the
// weights.
type Route struct {
	PathPrefix string `json:"path_prefix"`
	Header     string `json:"header,omitempty"`
	Value      string `json:"value,omitempty"`
	Slot       string `json:"slot"`
}

// Same reports whether r and o match the same requests: a prefix's
// trailing / does not change what it matches (/api and /api/ both match
// /api and below), and header names are case-insensitive.
func (r Route) Same(o Route) bool {
	return strings.TrimSuffix(r.PathPrefix, "/") == strings.TrimSuffix(o.PathPrefix, "/") &&
		strings.EqualFold(r.Header, o.Header) && r.Value == o.Value
}

// SetRoute returns s with route r, replacing a route that matches the same
// requests. slotExists says whether r's slot exists.
func (s State) SetRoute(r Route, slotExists bool) (State, error) {
	if !slotExists {
		return s, refused("route refused: no slot %q", r.Slot)
	}
	next := s.clone()
	if i := slices.IndexFunc(next.Routes, r.Same); i >= 0 {
		next.Routes[i] = r
	} else {
		next.Routes = append(next.Routes, r)
	}
	return next, nil
}

// RemoveRoute returns s without the route that matches the same requests
// as r (its Slot is ignored).
func (s State) RemoveRoute(r Route) (State, error) {
	i := slices.IndexFunc(s.Routes, r.Same)
	if i < 0 {
		var near []string
		for _, o := range s.Routes {
			if (Route{PathPrefix: o.PathPrefix}).Same(Route{PathPrefix: r.PathPrefix}) {
				near = append(near, o.PathPrefix+"*"+headerText(o))
			}
		}
		if len(near) > 0 {
			return s, refused("route remove refused: no route set through the API matches %s*%s; it has %s (name its header and value too)", r.PathPrefix, headerText(r), strings.Join(near, ", "))
		}
		return s, refused("route remove refused: no route set through the API matches %s*%s (routes in the configuration change with it and a reload)", r.PathPrefix, headerText(r))
	}
	next := s.clone()
	next.Routes = slices.Delete(next.Routes, i, i+1)
	if len(next.Routes) == 0 {
		next.Routes = nil
	}
	return next, nil
}

func headerText(r Route) string {
	if r.Header == "" {
		return ""
	}
	return " with " + r.Header + ": " + r.Value
}
