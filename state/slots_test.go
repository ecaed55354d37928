package state

import (
	"slices"
	"testing"
)

func TestSlotsAtRuntime(t *testing.T) {
	configured := []string{"blue", "green"}
	spec := func(n string) SlotSpec { return SlotSpec{Instances: []string{n + ":1"}} }
	s := State{Active: "blue", Standby: "green"}

	if _, err := s.AddSlot("red", SlotSpec{}, false); err == nil {
		t.Fatal("a slot without instances was added")
	}
	s2, err := s.AddSlot("red", SlotSpec{Instances: []string{"r:1"}, Version: "3"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if names, specs := s2.Members(configured, spec); !slices.Equal(names, []string{"blue", "green", "red"}) || specs["red"].Version != "3" {
		t.Fatalf("members %v %v", names, specs)
	}
	if s.Slots != nil {
		t.Fatal("AddSlot changed its receiver")
	}
	if _, err := s2.AddSlot("red", SlotSpec{Instances: []string{"x:1"}}, true); err == nil {
		t.Fatal("an existing slot was added again")
	}
	for _, c := range []struct {
		name   string
		st     State
		routed bool
		busy   int64
	}{
		{"blue", s2, false, 0},  // active
		{"green", s2, false, 0}, // standby
		{"red", s2.withWeights(map[string]int{"blue": 800, "red": 200}), false, 0},
		{"red", s2, true, 0},
		{"red", s2, false, 3},
	} {
		if _, err := c.st.RemoveSlot(c.name, slices.Contains(configured, c.name), c.routed, c.busy, false); err == nil {
			t.Errorf("removing %s from %+v (routed %v, %d in flight) was not refused", c.name, c.st, c.routed, c.busy)
		}
	}
	routed, _ := s2.SetRoute(Route{PathPrefix: "/r/", Slot: "red"}, true)
	routed, _ = routed.SetRoute(Route{PathPrefix: "/g/", Slot: "green"}, true)
	forced, err := routed.RemoveSlot("red", false, true, 3, true)
	if err != nil {
		t.Fatalf("force did not override the route and the requests in flight: %v", err)
	}
	if !slices.Equal(forced.Routes, []Route{{PathPrefix: "/g/", Slot: "green"}}) || forced.Check([]string{"blue", "green"}) != nil {
		t.Fatalf("routes after forcing red out: %+v; want only green's (a route to no slot fails Check)", forced.Routes)
	}
	s3, err := s2.RemoveSlot("red", false, false, 0, false)
	if err != nil || s3.Slots != nil || !s3.Equal(s) {
		t.Fatalf("removing an added slot: %+v, %v; want the state before it was added", s3, err)
	}
	// A configured slot, removed, stays removed; added again, it is back.
	s4, _ := s2.SetStage("red", Readiness{Healthy: 1, Routable: 1}, false)
	s5, err := s4.RemoveSlot("green", true, false, 0, false)
	if err != nil || !slices.Equal(s5.Removed, []string{"green"}) {
		t.Fatalf("removing configured green: %+v, %v", s5, err)
	}
	if names, _ := s5.Members(configured, spec); !slices.Equal(names, []string{"blue", "red"}) {
		t.Fatalf("members after removing green: %v", names)
	}
	s6, err := s5.AddSlot("green", SlotSpec{Instances: []string{"g:2"}}, false)
	if _, specs := s6.Members(configured, spec); err != nil || s6.Removed != nil || specs["green"].Instances[0] != "g:2" {
		t.Fatalf("adding green back: %+v, %v", s6, err)
	}
	if _, err := s.SetStage("blue", Readiness{Routable: 1}, false); err == nil {
		t.Fatal("stage was set to the active slot")
	}
	if _, err := s2.SetStage("red", Readiness{}, false); err == nil {
		t.Fatal("stage moved to a slot with no routable instance without force")
	}
}

func (s State) withWeights(w map[string]int) State {
	s = s.clone()
	s.Weights = w
	return s
}
