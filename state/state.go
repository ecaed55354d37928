// Package state is the desired routing state of vipswap and its pure
// transitions. It does no I/O: the store persists a State, the controller
// turns one into routing tables. Every transition returns a new State and
// leaves its receiver untouched; a refused one returns a *RefusedError.
package state

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
)

// State is the desired routing.
type State struct {
	// Active is the slot prod sends traffic to.
	Active string `json:"active"`
	// Standby is the slot stage sends traffic to, and the one a swap makes
	// active.
	Standby string `json:"standby"`
	// Previous is the slot that was active before the last swap or
	// rollback; empty until the first one. Rollback makes it active again.
	Previous string `json:"previous,omitempty"`
	// Drained lists instances that receive no new requests, as
	// InstanceKey(slot, addr), sorted.
	Drained []string `json:"drained,omitempty"`
	// Weights is prod's split while traffic is being shifted: slot to
	// per-mille, summing to Whole. Empty (as in states written before
	// weights existed) means the active slot takes everything; Prod says
	// what prod follows either way.
	Weights map[string]int `json:"weights,omitempty"`
	// Rollout is the running rollout; nil when none.
	Rollout *Rollout `json:"rollout,omitempty"`
	// Slots are the slots added at runtime (vipswap slot add), by name.
	// The configuration's slots are not stored here; one stored here under
	// a configuration slot's name replaces its membership.
	Slots map[string]SlotSpec `json:"slots,omitempty"`
	// Removed lists configuration slots removed at runtime (vipswap slot
	// remove), sorted: they stay removed across restarts until added again.
	Removed []string `json:"removed,omitempty"`
	// Routes are the version routes set through the API; they add to the
	// configuration's and replace one that matches the same requests.
	Routes []Route `json:"routes,omitempty"`
	// AffinityKey signs the affinity cookies vipswap issues (base64 of
	// NewAffinityKey's bytes), so a cookie a client made up is known as
	// such. Every node of a cluster reads the same one from the store, so
	// a cookie one node issued holds on any other. Empty in states written
	// before it existed; the first change that splits prod adds one.
	AffinityKey string `json:"affinity_key,omitempty"`
	// Shadow is the running mirror of prod's requests to another slot; nil
	// when none runs.
	Shadow *Shadow `json:"shadow,omitempty"`
}

// RefusedError says why a transition was refused. A refused transition
// changes nothing.
type RefusedError struct {
	// Reason is a one-line explanation meant for the operator.
	Reason string
}

func (e *RefusedError) Error() string { return e.Reason }

func refused(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// ErrUnknownSlot is wrapped by Check and Seed when a state names a slot that
// does not exist.
var ErrUnknownSlot = errors.New("unknown slot")

// InstanceKey names an instance of a slot in State.Drained.
func InstanceKey(slot, addr string) string { return slot + "/" + addr }

// Seed returns the initial state for a store that holds none: active is the
// configured active slot, standby the first other slot in order.
func Seed(active string, slots []string) (State, error) {
	if !slices.Contains(slots, active) {
		return State{}, fmt.Errorf("active slot %q: %w", active, ErrUnknownSlot)
	}
	for _, s := range slots {
		if s != active {
			return State{Active: active, Standby: s}, nil
		}
	}
	return State{}, fmt.Errorf("slot %q has no other slot to be standby", active)
}

// Check reports whether s fits the given slots: active and standby exist and
// differ.
func (s State) Check(slots []string) error {
	for _, name := range []string{s.Active, s.Standby} {
		if !slices.Contains(slots, name) {
			return fmt.Errorf("slot %q: %w", name, ErrUnknownSlot)
		}
	}
	if s.Active == s.Standby {
		return fmt.Errorf("active and standby are both %q", s.Active)
	}
	total := 0
	for name, w := range s.Weights {
		if !slices.Contains(slots, name) {
			return fmt.Errorf("weights: slot %q: %w", name, ErrUnknownSlot)
		}
		if w <= 0 || w > Whole {
			return fmt.Errorf("weights: slot %q has %d per mille; want 1 to 1000", name, w)
		}
		total += w
	}
	if len(s.Weights) > 0 && total != Whole {
		return fmt.Errorf("weights sum to %s, not 100%%", Percent(total))
	}
	if len(s.Weights) > 0 && s.Weights[s.Active] == 0 {
		return fmt.Errorf("weights give the active slot %q no share (a shift to 100%% makes its target active)", s.Active)
	}
	if r := s.Rollout; r != nil {
		if len(r.Steps) == 0 || r.Steps[len(r.Steps)-1].PerMille != Whole {
			return fmt.Errorf("rollout to %q: its steps must end at 100%%", r.To)
		}
		if r.Step < 0 || r.Step >= len(r.Steps) {
			return fmt.Errorf("rollout to %q: step %d of %d steps", r.To, r.Step, len(r.Steps))
		}
		for i, st := range r.Steps {
			if st.PerMille <= 0 || st.PerMille > Whole || (i > 0 && st.PerMille <= r.Steps[i-1].PerMille) {
				return fmt.Errorf("rollout to %q: step weights must rise from above 0 to 100%%", r.To)
			}
		}
		if r.To == s.Active {
			return fmt.Errorf("rollout to %q: it is the active slot", r.To)
		}
	}
	for _, r := range s.Routes {
		if !slices.Contains(slots, r.Slot) {
			return fmt.Errorf("route %s to slot %q: %w", r.PathPrefix, r.Slot, ErrUnknownSlot)
		}
	}
	if s.Rollout != nil && !slices.Contains(slots, s.Rollout.To) {
		return fmt.Errorf("rollout to slot %q: %w", s.Rollout.To, ErrUnknownSlot)
	}
	if s.AffinityKey != "" && s.AffinityKeyBytes() == nil {
		return errors.New("affinity_key: not base64 of at least 16 bytes")
	}
	return nil
}

// Validate checks what s must hold whatever the configuration: two
// different slots for active and standby, weights that add up and give the
// active slot a share, a rollout whose step exists. Check adds that every
// slot named exists.
func (s State) Validate() error {
	if s.Active == "" || s.Standby == "" || s.Active == s.Standby {
		return fmt.Errorf("the state needs two different slots for active and standby, got %q and %q", s.Active, s.Standby)
	}
	names := []string{s.Active, s.Standby}
	for n := range s.Weights {
		names = append(names, n)
	}
	for _, r := range s.Routes {
		names = append(names, r.Slot)
	}
	if s.Rollout != nil {
		names = append(names, s.Rollout.To)
	}
	return s.Check(names)
}

// Equal reports whether s and o are the same state.
func (s State) Equal(o State) bool {
	return s.Active == o.Active && s.Standby == o.Standby && s.Previous == o.Previous &&
		slices.Equal(s.Drained, o.Drained) && maps.Equal(s.Weights, o.Weights) && reflect.DeepEqual(s.Rollout, o.Rollout) &&
		maps.EqualFunc(s.Slots, o.Slots, SlotSpec.equal) && slices.Equal(s.Removed, o.Removed) && slices.Equal(s.Routes, o.Routes) &&
		s.AffinityKey == o.AffinityKey && reflect.DeepEqual(s.Shadow, o.Shadow)
}

// IsDrained reports whether the instance at addr of slot is drained.
func (s State) IsDrained(slot, addr string) bool {
	_, found := slices.BinarySearch(s.Drained, InstanceKey(slot, addr))
	return found
}

// Readiness is how many of a slot's instances could take traffic: healthy
// ones, and of those, routable ones (not drained).
type Readiness struct {
	Healthy  int
	Routable int
}

// lack says why a slot with no routable instance cannot take traffic,
// telling unhealthy from drained.
func (r Readiness) lack() string {
	if r.Healthy > 0 {
		return fmt.Sprintf("has no routable instance (%d healthy, all drained: vipswap ready them first)", r.Healthy)
	}
	return "has no healthy instance"
}

// Swap returns s with Active and Standby exchanged. With no routable
// instance in the standby slot the swap is refused unless force is set.
func (s State) Swap(standby Readiness, force bool) (State, error) {
	if s.Rollout != nil {
		return s, refused("swap refused: a rollout to %s is running (vipswap abort or promote --full first)", s.Rollout.To)
	}
	if standby.Routable == 0 && !force {
		return s, refused("swap refused: standby slot %q %s (--force swaps anyway)", s.Standby, standby.lack())
	}
	next := s.clone()
	next.Active, next.Standby, next.Previous = s.Standby, s.Active, s.Active
	next.Weights = nil // a swap moves everything: the 0/100 case of a shift
	return next, nil
}

// Rollback makes the slot that was active before the last swap active again.
// It is refused when no swap has happened, and like Swap when that slot has
// no routable instance and force is not set.
func (s State) Rollback(previous Readiness, force bool) (State, error) {
	switch {
	case s.Rollout != nil:
		return s, refused("rollback refused: a rollout to %s is running (vipswap abort sends everything back to %s)", s.Rollout.To, s.Active)
	case s.Previous == "":
		return s, refused("rollback refused: no swap has happened yet, so there is nothing to roll back to")
	case s.Previous != s.Standby:
		return s, refused("rollback refused: the previous slot %q is no longer standby", s.Previous)
	case previous.Routable == 0 && !force:
		return s, refused("rollback refused: previous slot %q %s (--force rolls back anyway)", s.Previous, previous.lack())
	}
	return s.Swap(previous, true)
}

// Drain marks an instance as receiving no new requests. lastRoutable
// reports that it is the only routable instance of a slot a listener sends
// traffic to; draining it is then refused unless force is set. Draining a
// drained instance returns s unchanged.
func (s State) Drain(slot, addr string, lastRoutable, force bool) (State, error) {
	key := InstanceKey(slot, addr)
	i, found := slices.BinarySearch(s.Drained, key)
	if found {
		return s, nil
	}
	if lastRoutable && !force {
		return s, refused("drain refused: %s is the last routable instance of slot %q, which takes traffic (--force drains it anyway)", addr, slot)
	}
	next := s.clone()
	next.Drained = slices.Insert(next.Drained, i, key)
	return next, nil
}

// Ready undoes Drain. Readying an instance that is not drained returns s
// unchanged.
func (s State) Ready(slot, addr string) State {
	i, found := slices.BinarySearch(s.Drained, InstanceKey(slot, addr))
	if !found {
		return s
	}
	next := s.clone()
	next.Drained = slices.Delete(next.Drained, i, i+1)
	return next
}

// Fit returns s without what refers to slots or instances that no longer
// exist: the drained marks of instances not in members (slot name to
// instance addresses), and Previous when its slot is gone (there is
// nothing to roll back to). Active and standby must exist; Check says so.
func (s State) Fit(members map[string][]string) State {
	next := s.clone()
	next.Drained = slices.DeleteFunc(next.Drained, func(key string) bool {
		for slot, addrs := range members {
			for _, a := range addrs {
				if InstanceKey(slot, a) == key {
					return false
				}
			}
		}
		return true
	})
	if len(next.Drained) == 0 {
		next.Drained = nil
	}
	if _, ok := members[next.Previous]; !ok {
		next.Previous = ""
	}
	if sh := next.Shadow; sh != nil {
		if _, ok := members[sh.To]; !ok {
			next.Shadow = nil // its slot is gone: so is the shadow
		}
	}
	return next
}

func (s State) clone() State {
	s.Drained = slices.Clone(s.Drained)
	s.Weights = maps.Clone(s.Weights)
	s.Slots = maps.Clone(s.Slots)
	s.Removed = slices.Clone(s.Removed)
	s.Routes = slices.Clone(s.Routes)
	if s.Rollout != nil {
		r := *s.Rollout
		r.Steps = slices.Clone(r.Steps)
		s.Rollout = &r
	}
	s.Shadow = s.Shadow.clone()
	return s
}

// NewAffinityKey returns a new random affinity key, as State.AffinityKey
// holds it.
func NewAffinityKey() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(b)
}

// AffinityKeyBytes returns s's affinity key decoded, or nil when s has none
// (or one that does not decode: Check refuses such a state).
func (s State) AffinityKeyBytes() []byte {
	b, err := base64.StdEncoding.DecodeString(s.AffinityKey)
	if err != nil || len(b) < 16 {
		return nil
	}
	return b
}
