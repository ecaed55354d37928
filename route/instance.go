package route

import "sync/atomic"

// Listener names the front-door address a request arrived on.
type Listener int

const (
	// Prod follows the active slot.
	Prod Listener = iota
	// Stage follows the standby slot.
	Stage
	numListeners
)

// Listeners lists every listener in order.
var Listeners = [numListeners]Listener{Prod, Stage}

// String returns "prod" or "stage".
func (l Listener) String() string {
	switch l {
	case Prod:
		return "prod"
	case Stage:
		return "stage"
	}
	return "unknown"
}

// Instance is one process of the application in one slot. It is created once
// per (slot, address) and shared by every Table that contains it, so its
// counters survive table changes. All methods are safe for concurrent use.
type Instance struct {
	// Slot is the slot the instance belongs to.
	Slot string
	// Addr is the instance's host:port.
	Addr string

	inFlight [numListeners]atomic.Int64
	served   [numListeners]atomic.Uint64
	errors   [numListeners]atomic.Uint64
}

// NewInstance returns an instance of slot at addr with zeroed counters.
func NewInstance(slot, addr string) *Instance {
	return &Instance{Slot: slot, Addr: addr}
}

// Begin counts one more request in flight on i that arrived on l.
func (i *Instance) Begin(l Listener) { i.inFlight[l].Add(1) }

// End counts the end of a request begun with Begin that the instance
// answered (with any status).
func (i *Instance) End(l Listener) {
	i.inFlight[l].Add(-1)
	i.served[l].Add(1)
}

// CountError counts an answer of the instance's that was a 5xx (after End).
func (i *Instance) CountError(l Listener) { i.errors[l].Add(1) }

// Errors returns how many of the requests that arrived on l the instance
// answered with a 5xx.
func (i *Instance) Errors(l Listener) uint64 { return i.errors[l].Load() }

// Abandon undoes a Begin for an attempt that did not get an answer; it is not
// counted as served.
func (i *Instance) Abandon(l Listener) { i.inFlight[l].Add(-1) }

// InFlight returns the number of requests in flight on i that arrived on l.
func (i *Instance) InFlight(l Listener) int64 { return i.inFlight[l].Load() }

// Load returns the number of requests in flight on i from every listener;
// the picker compares instances by it.
func (i *Instance) Load() int64 {
	return i.inFlight[Prod].Load() + i.inFlight[Stage].Load()
}

// Served returns how many requests that arrived on l the instance answered.
func (i *Instance) Served(l Listener) uint64 { return i.served[l].Load() }
