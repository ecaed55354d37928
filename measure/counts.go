// Package measure keeps what the data planes counted over time: snapshots
// of their per-listener, per-slot counts, one a second over the last few
// minutes, and the arithmetic on them. A switch is measured and a canary
// judged from differences between two snapshots; the per-second rates are
// the differences between neighbours. It does no I/O of its own: the
// data plane's counts come through a function.
package measure

import (
	"time"

	"github.com/vipswap/vipswap/route"
)

// Counts is one snapshot of what a data plane counted since it started, per
// listener and slot.
type Counts [len(route.Listeners)]map[string]route.Counts

// Sub returns c minus an earlier snapshot o, per listener and slot.
func (c Counts) Sub(o Counts) Counts {
	var out Counts
	for l := range c {
		out[l] = make(map[string]route.Counts, len(c[l]))
		for slot, n := range c[l] {
			out[l][slot] = n.Sub(o[l][slot])
		}
	}
	return out
}

// Listener sums l's counts over every slot.
func (c Counts) Listener(l route.Listener) route.Counts {
	var sum route.Counts
	for _, n := range c[l] {
		sum = sum.Add(n)
	}
	return sum
}

// Slot sums slot's counts over both listeners.
func (c Counts) Slot(name string) route.Counts {
	var sum route.Counts
	for l := range c {
		sum = sum.Add(c[l][name])
	}
	return sum
}

// Snapshot is the counts at one moment.
type Snapshot struct {
	// At is when the counts were read.
	At time.Time
	// Counts are what the data plane had counted by then.
	Counts Counts
}
