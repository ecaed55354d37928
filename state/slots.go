package state

import (
	"maps"
	"reflect"
	"slices"
	"time"
)

// SlotSpec is a slot added at runtime: its instances, or how to run them,
// and its version label.
type SlotSpec struct {
	// Instances are the host:port addresses of its instances (none when
	// Run is set).
	Instances []string `json:"instances,omitempty"`
	// Run, if set, says how vipswap starts the slot's instances itself.
	Run *RunSpec `json:"run,omitempty"`
	// Version labels what it runs; may be empty.
	Version string `json:"version,omitempty"`
}

// RunSpec is a managed slot's run: block.
type RunSpec struct {
	Command     []string      `json:"command"`
	Address     string        `json:"address"`
	Replicas    int           `json:"replicas"`
	StopTimeout time.Duration `json:"stop_timeout_ns"`
}

func (a SlotSpec) equal(b SlotSpec) bool {
	return a.Version == b.Version && slices.Equal(a.Instances, b.Instances) && reflect.DeepEqual(a.Run, b.Run)
}

// Members returns the slots that exist in s given the configuration's
// slots (name to spec, in configured order): the configuration's, less the
// removed ones, with those stored in s.Slots replacing or adding to them.
// Names come in configuration order, then the added ones sorted.
func (s State) Members(configured []string, spec func(string) SlotSpec) (names []string, specs map[string]SlotSpec) {
	specs = make(map[string]SlotSpec)
	for _, n := range configured {
		if slices.Contains(s.Removed, n) {
			continue
		}
		names = append(names, n)
		specs[n] = spec(n)
	}
	for _, n := range slices.Sorted(maps.Keys(s.Slots)) {
		if _, ok := specs[n]; !ok {
			names = append(names, n)
		}
		specs[n] = s.Slots[n]
	}
	return names, specs
}

// AddSlot returns s with slot name added with spec. exists says whether a
// slot of that name exists now (configured and not removed, or added).
func (s State) AddSlot(name string, spec SlotSpec, exists bool) (State, error) {
	if exists {
		return s, refused("slot add refused: slot %q exists (vipswap slot remove it first, or choose another name)", name)
	}
	if len(spec.Instances) == 0 && spec.Run == nil {
		return s, refused("slot add refused: slot %q needs at least one instance, or a run block", name)
	}
	next := s.clone()
	if next.Slots == nil {
		next.Slots = map[string]SlotSpec{}
	}
	spec.Instances = slices.Clone(spec.Instances)
	next.Slots[name] = spec
	next.Removed = slices.DeleteFunc(next.Removed, func(n string) bool { return n == name })
	if len(next.Removed) == 0 {
		next.Removed = nil
	}
	return next, nil
}

// RemoveSlot returns s without slot name. configured says whether the
// configuration declares it (it is then remembered as removed); routed
// whether a route sends requests to it; inFlight how many requests it has
// in flight. A slot that takes traffic (active, standby, a share of prod, a
// rollout's canary) is never removed; a route or requests in flight refuse
// it unless force. Routes in s to the slot go with it.
func (s State) RemoveSlot(name string, configured, routed bool, inFlight int64, force bool) (State, error) {
	switch {
	case name == s.Active:
		return s, refused("slot remove refused: %s is the active slot (swap or shift prod to another slot first)", name)
	case name == s.Standby:
		return s, refused("slot remove refused: %s is the standby slot that stage follows (vipswap stage OTHER first)", name)
	case s.WeightOf(name) > 0:
		return s, refused("slot remove refused: %s has %s of prod (vipswap shift --to %s --weight 0, or abort, first)", name, Percent(s.WeightOf(name)), name)
	case s.Rollout != nil && s.Rollout.To == name:
		return s, refused("slot remove refused: a rollout to %s is running (vipswap abort first)", name)
	case routed && !force:
		return s, refused("slot remove refused: a route sends requests to %s (remove the route, or --force: routes set through the API go with the slot, the configuration's answer 503)", name)
	case inFlight > 0 && !force:
		return s, refused("slot remove refused: %s has %d requests in flight (wait, or --force cuts them off)", name, inFlight)
	}
	next := s.clone()
	delete(next.Slots, name)
	if len(next.Slots) == 0 {
		next.Slots = nil
	}
	if configured && !slices.Contains(next.Removed, name) {
		next.Removed = append(next.Removed, name)
		slices.Sort(next.Removed)
	}
	next.Drained = slices.DeleteFunc(next.Drained, func(k string) bool { return len(k) > len(name) && k[:len(name)+1] == name+"/" })
	if len(next.Drained) == 0 {
		next.Drained = nil
	}
	if next.Previous == name {
		next.Previous = ""
	}
	next.Routes = slices.DeleteFunc(next.Routes, func(r Route) bool { return r.Slot == name })
	if len(next.Routes) == 0 {
		next.Routes = nil
	}
	return next, nil
}

// SetStage returns s with stage following slot (it becomes the standby
// slot: the one a swap makes active). It cannot be the active slot.
func (s State) SetStage(slot string, target Readiness, force bool) (State, error) {
	switch {
	case slot == s.Active:
		return s, refused("stage refused: %s is the active slot; stage follows another", slot)
	case target.Routable == 0 && !force:
		return s, refused("stage refused: slot %q %s (--force moves stage anyway)", slot, target.lack())
	}
	next := s.clone()
	next.Standby = slot
	return next, nil
}

// Redeploy returns s with slot name running spec from now on: a deploy
// that started new instances for it, or a rolling update that replaced
// them one by one. A deploy (inPlace false) is refused while the slot
// takes prod traffic; a rolling update keeps the slot serving and is not.
func (s State) Redeploy(name string, spec SlotSpec, exists, inPlace bool) (State, error) {
	switch {
	case !exists:
		return s, refused("deploy refused: no slot %q", name)
	case spec.Run == nil:
		return s, refused("deploy refused: slot %q: vipswap starts no instances for it (no run block)", name)
	case !inPlace && s.TakesProd(name):
		return s, refused("deploy refused: %s takes prod traffic; deploy to the standby or a new slot, or update it in place with vipswap rolling", name)
	}
	next := s.clone()
	if next.Slots == nil {
		next.Slots = map[string]SlotSpec{}
	}
	run := *spec.Run
	run.Command = slices.Clone(run.Command)
	next.Slots[name] = SlotSpec{Run: &run, Version: spec.Version}
	return next, nil
}

// TakesProd reports whether slot name carries prod traffic: it is the
// active slot, has a share of prod, or is a running rollout's canary.
func (s State) TakesProd(name string) bool {
	return name == s.Active || s.WeightOf(name) > 0 || (s.Rollout != nil && s.Rollout.To == name)
}
