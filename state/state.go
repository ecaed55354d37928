// Package state is the desired routing state of vipswap and its pure
// transitions. It does no I/O: the store persists a State, the controller
// turns one into routing tables.
package state

import (
	"errors"
	"fmt"
	"slices"
)

// State is the desired routing: which slot the prod listener follows and
// which the stage listener follows.
type State struct {
	// Active is the slot prod sends traffic to.
	Active string `json:"active"`
	// Standby is the slot stage sends traffic to, and the one a swap makes
	// active.
	Standby string `json:"standby"`
}

// RefusedError says why a transition was refused. A refused transition
// changes nothing.
type RefusedError struct {
	// Reason is a one-line explanation meant for the operator.
	Reason string
}

func (e *RefusedError) Error() string { return e.Reason }

// ErrUnknownSlot is wrapped by Check when a state names a slot that does not
// exist.
var ErrUnknownSlot = errors.New("unknown slot")

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

// Check reports whether s is valid for the given slots: both slots exist and
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
	return nil
}

// Swap returns s with Active and Standby exchanged. standbyHealthy is the
// number of healthy instances in the standby slot; with none the swap is
// refused with a *RefusedError unless force is set.
func (s State) Swap(standbyHealthy int, force bool) (State, error) {
	if standbyHealthy == 0 && !force {
		return s, &RefusedError{Reason: fmt.Sprintf(
			"swap refused: standby slot %q has no healthy instance (use force to swap anyway)", s.Standby)}
	}
	return State{Active: s.Standby, Standby: s.Active}, nil
}
