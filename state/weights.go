package state

import (
	"fmt"
	"maps"
	"slices"
	"sort"
)

// Whole is 100 % in the per-mille units of weights: a weight of 1 is 0.1 %.
const Whole = 1000

// Share is one slot's part of a listener's new requests.
type Share struct {
	// Slot is the slot's name.
	Slot string
	// PerMille is its share, from 1 to Whole.
	PerMille int
}

// Prod returns the slots prod sends new requests to, with their shares,
// the active slot first, then by name. It is the one place that decides
// what prod follows: without weights, the active slot takes everything.
func (s State) Prod() []Share {
	if len(s.Weights) == 0 {
		return []Share{{Slot: s.Active, PerMille: Whole}}
	}
	out := make([]Share, 0, len(s.Weights))
	for slot, w := range s.Weights {
		if w > 0 {
			out = append(out, Share{Slot: slot, PerMille: w})
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if (out[a].Slot == s.Active) != (out[b].Slot == s.Active) {
			return out[a].Slot == s.Active
		}
		return out[a].Slot < out[b].Slot
	})
	return out
}

// Stage returns the slot stage sends its requests to.
func (s State) Stage() string { return s.Standby }

// WeightOf returns slot's share of prod, in per-mille.
func (s State) WeightOf(slot string) int {
	for _, sh := range s.Prod() {
		if sh.Slot == slot {
			return sh.PerMille
		}
	}
	return 0
}

// Shift gives slot `to` perMille of prod's new requests (0 to Whole):
//   - Whole completes the shift: `to` becomes active, the old active slot
//     standby and previous (what a swap does when `to` is the standby);
//   - 0 sends everything back to the active slot;
//   - anything between sets `to`'s share, and the rest goes to the slots
//     that had a share, in proportion (to the active slot if none had).
//
// Giving traffic to a slot with no routable instance is refused unless
// force. Shifting to the active slot is refused: it has everything that is
// not shifted away.
func (s State) Shift(to string, perMille int, target Readiness, force bool) (State, error) {
	switch {
	case perMille < 0 || perMille > Whole:
		return s, fmt.Errorf("weight %s: want 0 to 100", Percent(perMille))
	case to == s.Active && perMille != 0:
		return s, refused("shift refused: %s is the active slot already; shift to another slot, or to %s with --weight 0 to send everything back", to, to)
	case perMille > 0 && target.Routable == 0 && !force:
		return s, refused("shift refused: slot %q %s (--force shifts anyway)", to, target.lack())
	}
	next := s.clone()
	switch perMille {
	case 0:
		next.Weights = nil
	case Whole:
		next.Weights = nil
		next.Previous, next.Standby, next.Active = s.Active, s.Active, to
	default:
		next.Weights = spread(s.shares(), to, perMille, s.Active)
	}
	return next, nil
}

// shares returns the weights in force as a map, the active slot holding
// everything when there are none.
func (s State) shares() map[string]int {
	if len(s.Weights) == 0 {
		return map[string]int{s.Active: Whole}
	}
	return maps.Clone(s.Weights)
}

// spread gives to perMille and shares the rest among the other slots of
// cur in proportion to their weights (all to active if they have none),
// rounding so the total is exactly Whole.
func spread(cur map[string]int, to string, perMille int, active string) map[string]int {
	delete(cur, to)
	rest, total := Whole-perMille, 0
	for _, w := range cur {
		total += w
	}
	if total == 0 {
		return map[string]int{to: perMille, active: rest}
	}
	out := map[string]int{to: perMille}
	names := slices.Sorted(maps.Keys(cur))
	given := 0
	for _, n := range names {
		w := cur[n] * rest / total
		out[n] = w
		given += w
	}
	// What rounding left goes to the largest share (the active slot first).
	sort.SliceStable(names, func(a, b int) bool {
		if (names[a] == active) != (names[b] == active) {
			return names[a] == active
		}
		return cur[names[a]] > cur[names[b]]
	})
	out[names[0]] += rest - given
	for n, w := range out {
		if w == 0 {
			delete(out, n)
		}
	}
	return out
}

// Percent formats a per-mille weight as a percentage: "20%", "12.5%".
func Percent(perMille int) string {
	if perMille%10 == 0 {
		return fmt.Sprintf("%d%%", perMille/10)
	}
	return fmt.Sprintf("%.1f%%", float64(perMille)/10)
}
