package api

// Status is the answer of GET /v1/status: the routing state, every slot and
// instance with its health and counters. Its shape is documented in
// docs/api.md and only grows.
type Status struct {
	// Revision is the state revision that is in force.
	Revision uint64 `json:"revision"`
	// Active is the slot prod follows.
	Active string `json:"active"`
	// Standby is the slot stage follows.
	Standby string `json:"standby"`
	// Listeners are the front-door addresses.
	Listeners []ListenerStatus `json:"listeners"`
	// Slots are every configured slot, in configuration order.
	Slots []SlotStatus `json:"slots"`
}

// ListenerStatus is one listener.
type ListenerStatus struct {
	// Name is "prod" or "stage".
	Name string `json:"name"`
	// Addr is the address it accepts connections on.
	Addr string `json:"addr"`
	// Slot is the slot it sends traffic to.
	Slot string `json:"slot"`
}

// SlotStatus is one slot.
type SlotStatus struct {
	// Name is the slot's name.
	Name string `json:"name"`
	// Role is "active", "standby" or "idle".
	Role string `json:"role"`
	// Healthy counts the slot's healthy instances.
	Healthy int `json:"healthy"`
	// InFlight counts requests in flight on the slot, per listener.
	InFlight PerListener `json:"in_flight"`
	// Instances are the slot's instances.
	Instances []InstanceStatus `json:"instances"`
}

// PerListener is a count per listener.
type PerListener struct {
	// Prod is the count for the prod listener.
	Prod int64 `json:"prod"`
	// Stage is the count for the stage listener.
	Stage int64 `json:"stage"`
}

// Total returns Prod + Stage.
func (p PerListener) Total() int64 { return p.Prod + p.Stage }

// InstanceStatus is one instance.
type InstanceStatus struct {
	// Addr is the instance's host:port.
	Addr string `json:"addr"`
	// Healthy reports the health-check verdict.
	Healthy bool `json:"healthy"`
	// InFlight counts its requests in flight, per listener.
	InFlight PerListener `json:"in_flight"`
	// Served counts the requests it answered, per listener.
	Served PerListener `json:"served"`
}

// SwapRequest is the body of POST /v1/swap.
type SwapRequest struct {
	// Force swaps even when the standby slot has no healthy instance.
	Force bool `json:"force"`
}

// SwapResult is the answer of a successful POST /v1/swap.
type SwapResult struct {
	// From is the slot that was active and is now standby.
	From string `json:"from"`
	// To is the slot that is now active.
	To string `json:"to"`
	// Revision is the new state revision.
	Revision uint64 `json:"revision"`
	// Forced reports that the swap went ahead without a healthy instance.
	Forced bool `json:"forced"`
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	// Error is a one-line explanation.
	Error string `json:"error"`
}
