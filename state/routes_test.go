package state

import "testing"

// A prefix's trailing / does not change what it matches: setting /api
// replaces a route set as /api/, and removing /api/ removes it.
func TestRoutesDifferingInATrailingSlashAreTheSame(t *testing.T) {
	s, err := State{}.SetRoute(Route{PathPrefix: "/api/", Slot: "green"}, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err = s.SetRoute(Route{PathPrefix: "/api", Slot: "blue"}, true)
	if err != nil || len(s.Routes) != 1 || s.Routes[0] != (Route{PathPrefix: "/api", Slot: "blue"}) {
		t.Fatalf("routes %+v, %v; want /api to blue alone", s.Routes, err)
	}
	if s, err = s.RemoveRoute(Route{PathPrefix: "/api/"}); err != nil || len(s.Routes) != 0 {
		t.Fatalf("removing /api/: routes %+v, %v; want none", s.Routes, err)
	}
	if (Route{PathPrefix: "/api"}).Same(Route{PathPrefix: "/apix"}) || !(Route{PathPrefix: "/"}).Same(Route{PathPrefix: "/"}) {
		t.Fatal("Same confuses /api with /apix, or / with itself")
	}
}
