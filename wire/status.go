package wire

import "time"

// PlaneStatus is what a remote data plane last did.
type PlaneStatus struct {
	// Name names it: "haproxy /run/haproxy/admin.sock".
	Name string `json:"name"`
	// Revision is the state revision of the newest table it was given;
	// Applied says whether the load balancer showed it when last read.
	Revision uint64 `json:"revision"`
	Applied  bool   `json:"applied"`
	// Error is why not.
	Error string `json:"error,omitempty"`
	// ConvergedSeconds is how long the last apply took until the load
	// balancer showed it.
	ConvergedSeconds float64 `json:"converged_seconds"`
	// Reapplied counts the times the load balancer had lost what was
	// applied (restarted, reloaded) and it was applied again.
	Reapplied uint64 `json:"reapplied"`
	// Since is when Applied or Error last changed.
	Since time.Time `json:"since,omitzero"`
}

// StoreStatus says whether this node reaches its state store.
type StoreStatus struct {
	// Reachable is false while the store cannot be read or written;
	// changes are then refused and the node serves the last state it had.
	Reachable bool `json:"reachable"`
	// Error is why not, while unreachable.
	Error string `json:"error,omitempty"`
	// Since is when Reachable last changed (or the controller started).
	Since time.Time `json:"since"`
	// LocalCopy is true while the node serves the local copy of the last
	// state it saw, having started while the store was out of reach (or
	// while it held a state this node cannot apply).
	LocalCopy bool `json:"local_copy,omitempty"`
	// NotApplied, when set, is a state the store holds that this node
	// refused to put in force: it keeps serving the one it had.
	NotApplied *NotApplied `json:"not_applied,omitempty"`
}

// NotApplied is a stored state a node refused.
type NotApplied struct {
	// Revision is the refused state's revision; 0 when it was unreadable.
	Revision uint64 `json:"revision"`
	// Error says why it does not apply.
	Error string `json:"error"`
	// Since is when it was first refused.
	Since time.Time `json:"since"`
}

// AddSlotRequest is the body of POST /v1/slots.
type AddSlotRequest struct {
	ChangeRequest
	// Name is the new slot's name.
	Name string `json:"name"`
	// Instances are its instances' host:port addresses.
	Instances []string `json:"instances,omitempty"`
	// Run, instead of Instances, has vipswap start the instances itself.
	Run *RunSpec `json:"run,omitempty"`
	// Version labels what it runs (optional).
	Version string `json:"version,omitempty"`
}

// StageRequest is the body of POST /v1/stage.
type StageRequest struct {
	ChangeRequest
	// Slot is the slot stage follows from now on.
	Slot string `json:"slot"`
}

// RouteRequest is the body of POST /v1/routes (set a route) and DELETE
// /v1/routes (remove one: Slot is ignored).
type RouteRequest struct {
	ChangeRequest
	// PathPrefix is matched against the request's canonical path, on
	// segment boundaries (route.CheckPrefix says which prefixes are
	// refused).
	PathPrefix string `json:"path_prefix"`
	// Header and Value, if set, must also match.
	Header string `json:"header,omitempty"`
	Value  string `json:"value,omitempty"`
	// Slot is where matching requests go.
	Slot string `json:"slot,omitempty"`
}

// RunSpec is how vipswap starts a slot's instances itself: Command (with
// {port} and {version}), on Address, Replicas of them, each given
// StopTimeout to finish its requests when stopped.
type RunSpec struct {
	Command     []string      `json:"command"`
	Address     string        `json:"address"`
	Replicas    int           `json:"replicas"`
	StopTimeout time.Duration `json:"stop_timeout_ns"`
}
