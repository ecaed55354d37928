// Package wire holds the admin API's wire types: the JSON bodies of its
// requests and answers, as plain data. It imports nothing of vipswap's,
// so the Go client, and anything that talks to the admin API, depends on
// it alone; the admin server and the control plane fill them in.
package wire

import "time"

// VersionHeader is set on every JSON answer of the admin API, errors
// included, so that a client can tell vipswap from another server that
// happens to answer on the address it was given.
const VersionHeader = "Vipswap-Api"

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
	// Previous is the slot active before the last swap; rollback returns to
	// it. Empty until the first swap.
	Previous string `json:"previous,omitempty"`
	// Listeners are the front-door addresses.
	Listeners []ListenerStatus `json:"listeners"`
	// Slots are every configured slot, in configuration order.
	Slots []SlotStatus `json:"slots"`
	// Routes are prod's version routes, most specific first; absent when
	// there are none.
	Routes []RouteStatus `json:"routes,omitempty"`
	// Node names the vipswap that answered (cluster mode; its health view
	// is its own).
	Node string `json:"node,omitempty"`
	// Store says whether this node reaches the state store.
	Store StoreStatus `json:"store"`
	// DrivesRollouts is true on the node that drives a running rollout:
	// with a cluster store, the holder of the etcd lease.
	DrivesRollouts bool `json:"drives_rollouts"`
	// DataPlanes are the load balancers outside vipswap it drives
	// (HAProxy), and what each last applied.
	DataPlanes []PlaneStatus `json:"dataplanes,omitempty"`
	// AdminTLS lists the certificates the admin API serves over TLS
	// (admin.tls), the default first; absent when it speaks cleartext.
	AdminTLS []CertificateStatus `json:"admin_tls,omitempty"`
	// Shadow is the running shadow and what this node's mirror counted of
	// it; null when none runs.
	Shadow *Shadow `json:"shadow"`
}

// RouteStatus is one version route: prod requests whose path starts with
// PathPrefix (and that carry Header: Value, when Header is set) go to Slot.
type RouteStatus struct {
	PathPrefix string `json:"path_prefix"`
	Header     string `json:"header,omitempty"`
	Value      string `json:"value,omitempty"`
	Slot       string `json:"slot"`
	// Origin is "config" (the configuration file) or "api" (set with
	// vipswap route set; stored in the state).
	Origin string `json:"origin"`
}

// ListenerStatus is one listener.
type ListenerStatus struct {
	// Name is "prod" or "stage".
	Name string `json:"name"`
	// Addr is the address it accepts connections on.
	Addr string `json:"addr"`
	// Slot is the slot it sends traffic to.
	Slot string `json:"slot"`
	// Weights is the share of the listener's new requests each slot gets,
	// in percent; the slots it does not name get none.
	Weights map[string]float64 `json:"weights"`
	// Failed counts requests on this listener that vipswap could not get
	// answered (its own 5xx, connection errors, timeouts) since it started.
	Failed uint64 `json:"failed"`
	// InstanceErrors counts the 5xx answers the instances gave on this
	// listener since vipswap started.
	InstanceErrors uint64 `json:"instance_errors"`
	// ClientErrors counts the 4xx answers vipswap gave on this listener
	// for the client's own mistake (a bad pin, a malformed or too slow
	// request) since it started: never failures.
	ClientErrors uint64 `json:"client_errors"`
	// TLS lists the certificates a TLS listener serves, the default
	// first; absent on a cleartext listener.
	TLS []CertificateStatus `json:"tls,omitempty"`
}

// CertificateStatus is one certificate a TLS listener serves.
type CertificateStatus struct {
	// Names are the names it is for (DNS names, then IP addresses).
	Names []string `json:"names"`
	// NotAfter is when it expires.
	NotAfter time.Time `json:"not_after"`
}

// SlotStatus is one slot.
type SlotStatus struct {
	// Name is the slot's name.
	Name string `json:"name"`
	// Role is "active", "standby" or "idle".
	Role string `json:"role"`
	// Version is the slot's version label (slots.NAME.version), if set.
	Version string `json:"version,omitempty"`
	// Healthy counts the slot's healthy instances.
	Healthy int `json:"healthy"`
	// Routable counts the instances that may receive new requests: healthy
	// and not drained.
	Routable int `json:"routable"`
	// InFlight counts requests in flight on the slot, per listener.
	InFlight PerListener `json:"in_flight"`
	// LastRequest is about when the slot last answered a request (to the
	// second; counted once a second), if it has since vipswap started.
	LastRequest *time.Time `json:"last_request,omitempty"`
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
	// Drained reports that an operator took it out of rotation.
	Drained bool `json:"drained"`
	// InFlight counts its requests in flight, per listener.
	InFlight PerListener `json:"in_flight"`
	// Served counts the requests it answered, per listener.
	Served PerListener `json:"served"`
	// Errors counts the requests it answered with a 5xx, per listener.
	Errors PerListener `json:"errors"`
	// Check is the last health check (or passive mark); absent before the
	// first.
	Check *Check `json:"check,omitempty"`
	// HealthSince is when Healthy last changed (when probing began if it
	// never did).
	HealthSince time.Time `json:"health_since,omitzero"`
	// DataPlanes says how each load balancer outside vipswap sees the
	// instance ("haproxy /run/haproxy.sock: UP, L7OK, 0 in flight").
	DataPlanes []string `json:"dataplanes,omitempty"`
}

// Check is one health check's outcome, in HAProxy's terms.
type Check struct {
	// Code is L7OK, L7STS, L7RSP, L7TOUT, L6RSP (TLS handshake failed),
	// L6TOUT, L4CON, L4TOUT, SOCKERR (vipswap
	// could not probe) or PASSIVE (the data plane saw a refused
	// connection).
	Code string `json:"code"`
	// Status is the HTTP status the probe got, if it got one.
	Status int `json:"status,omitempty"`
	// Detail says more: the socket error, the status text.
	Detail string `json:"detail,omitempty"`
	// Text is the whole outcome in one phrase: "L7STS 404",
	// "L4CON connection refused".
	Text string `json:"text"`
	// Time is when the check started.
	Time time.Time `json:"time"`
	// DurationMS is how long it took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
}

// ChangeRequest is the body of every state-changing call (swap, rollback,
// drain, ready). Every field is optional.
type ChangeRequest struct {
	// Force overrides the health check that would refuse the change.
	Force bool `json:"force,omitempty"`
	// Reason is recorded in the history.
	Reason string `json:"reason,omitempty"`
	// IfRevision, when set, makes the change apply only if the state is
	// still at that revision; otherwise it is refused with 409.
	IfRevision *uint64 `json:"if_revision,omitempty"`
	// DryRun reports what the change would do and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`

	// Actor is who asks: the token's name, or "local". The server sets it;
	// it is not read from the body.
	Actor string `json:"-"`
}

// Change is the answer of a state-changing call.
type Change struct {
	// Operation is "swap", "rollback", "drain" or "ready".
	Operation string `json:"operation"`
	// Applied reports that the state changed. It is false for a dry run and
	// for a change that was already in effect (draining a drained instance).
	Applied bool `json:"applied"`
	// DryRun echoes the request.
	DryRun bool `json:"dry_run,omitempty"`
	// From and To are the active slot before and after (swap, rollback).
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Instance is "slot/host:port" (drain, ready).
	Instance string `json:"instance,omitempty"`
	// Forced reports that the change overrode a failed health check.
	Forced bool `json:"forced,omitempty"`
	// Weights is prod's split after the change, in percent (swap,
	// rollback, shift, rollout operations).
	Weights map[string]float64 `json:"weights,omitempty"`
	// InEffect reports that the state already is what the change asks for
	// (draining a drained instance): nothing changed, or would.
	InEffect bool `json:"in_effect,omitempty"`
	// Refused, in a dry run, says why the change would be refused.
	Refused string `json:"refused,omitempty"`
	// Revision is the state revision after the change (the current one for
	// a dry run or a change that was already in effect).
	Revision uint64 `json:"revision"`
	// TargetRoutable counts the healthy, undrained instances of the slot
	// that would take prod traffic (swap, rollback).
	TargetRoutable int `json:"target_routable"`
	// InFlight counts prod requests in flight on the slot or instance that
	// the change takes traffic from.
	InFlight int64 `json:"in_flight"`
	// HistoryID is the history entry that records an applied change.
	HistoryID uint64 `json:"history_id,omitempty"`
	// Changes says, one line each, what a reload changed (or would, in a
	// dry run).
	Changes []string `json:"changes,omitempty"`
	// Warnings say what an applied change may cost that vipswap did not
	// refuse: a reload that leaves a slot taking traffic with none of the
	// instances that are routable now.
	Warnings []string `json:"warnings,omitempty"`
	// Plan says, in a dry run, what each load balancer vipswap drives
	// (Azure) would change, one field a line with its az command.
	Plan []string `json:"plan,omitempty"`
}

// HistoryEntry is one record of GET /v1/history.
type HistoryEntry struct {
	// ID numbers entries from 1 in the order they were recorded.
	ID uint64 `json:"id"`
	// Time is when the operation was decided.
	Time time.Time `json:"time"`
	// Actor is who asked: a token's name, or "local".
	Actor string `json:"actor"`
	// Operation is "swap", "rollback", "drain" or "ready".
	Operation string `json:"operation"`
	// From and To are the active slot before and after (swap, rollback).
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Instance is "slot/host:port" (drain, ready).
	Instance string `json:"instance,omitempty"`
	// Forced reports that a failed health check was overridden.
	Forced bool `json:"forced,omitempty"`
	// Reason is the operator's reason.
	Reason string `json:"reason,omitempty"`
	// Changes says, one line each, what a reload changed.
	Changes []string `json:"changes,omitempty"`
	// Result is "applied", "refused", or "failed" (a release that
	// stopped at a step).
	Result string `json:"result"`
	// Error says why it was refused or failed.
	Error string `json:"error,omitempty"`
	// Revision is the state revision an applied change produced.
	Revision uint64 `json:"revision,omitempty"`
	// Measurement is what the prod listener saw from an applied swap or
	// rollback until the old slot drained; absent until then.
	Measurement *Measurement `json:"measurement,omitempty"`
	// Draining is, while the change is being measured, the old active
	// slot's prod requests still in flight (as the measurement last saw
	// them); absent once measured, and after a restart.
	Draining *int64 `json:"draining,omitempty"`
	// Steps are a release's steps (deploy, rolling), in order.
	Steps []Step `json:"steps,omitempty"`
}

// Step is one step of a release: what it did, when, for how long, and
// how it ended.
type Step struct {
	// Name says what the step does ("start", "healthy", "switch", ...).
	Name string `json:"name"`
	// Start is when it began; Seconds how long it took (so far, while it
	// runs).
	Start   time.Time `json:"start"`
	Seconds float64   `json:"seconds"`
	// Result is "running", "ok" or "failed".
	Result string `json:"result"`
	// Detail says what it saw or why it failed.
	Detail string `json:"detail,omitempty"`
}

// Measurement is what the prod listener counted from a change until the old
// slot had no request in flight.
type Measurement struct {
	// Served counts prod requests answered in the window.
	Served uint64 `json:"served"`
	// Failed counts prod requests vipswap could not get answered.
	Failed uint64 `json:"failed"`
	// InstanceErrors counts prod requests the instances answered with a
	// 5xx: what clients received from the application.
	InstanceErrors uint64 `json:"instance_errors"`
	// ClientErrors counts prod requests vipswap answered with a 4xx for
	// the client's own mistake: never failures.
	ClientErrors uint64 `json:"client_errors"`
	// DrainedSeconds is how long the old slot took to drain.
	DrainedSeconds float64 `json:"drained_seconds"`
	// Complete is false when measuring gave up before the old slot drained.
	Complete bool `json:"complete"`
	// Start and End bound the window: from measure.before before the
	// change to measure.after after it, or until the old slot drained if
	// that took longer. Absent in entries from before windows were
	// measured.
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`
	// WindowSeconds is End - Start.
	WindowSeconds float64 `json:"window_seconds,omitempty"`
	// Listeners holds each listener's figures in the window.
	Listeners map[string]Window `json:"listeners,omitempty"`
	// ConvergedSeconds is, when a load balancer outside vipswap (HAProxy)
	// carries the traffic, how long it took from the change until it
	// showed the new routing when read back.
	ConvergedSeconds float64 `json:"converged_seconds,omitempty"`
	// Nodes holds, in cluster mode, each node's own measurement by node
	// name; the figures above are their sum (the window spans theirs,
	// drained_seconds is the longest, complete only if all are).
	Nodes map[string]*Measurement `json:"nodes,omitempty"`
}

// Window is what one listener counted in a measurement's window.
type Window struct {
	// Requests counts answered requests, whatever their status.
	Requests uint64 `json:"requests"`
	// Errors counts 5xx answers (the instances' and vipswap's own) and
	// broken-off answers.
	Errors uint64 `json:"errors"`
	// Failed counts vipswap's own failures (a subset of Errors).
	Failed uint64 `json:"failed"`
	// InstanceErrors counts the instances' own 5xx answers (a subset of
	// Errors).
	InstanceErrors uint64 `json:"instance_errors"`
	// ClientErrors counts vipswap's 4xx answers to the client's own
	// mistakes (not in Errors).
	ClientErrors uint64 `json:"client_errors"`
}

// RateSample is one second's rates.
type RateSample struct {
	// Time is when the second ended.
	Time time.Time `json:"time"`
	// Slots maps a slot name to its rates; "none" counts requests that
	// found no slot.
	Slots map[string]SlotRate `json:"slots"`
}

// SlotRate is a slot's rates in one sample.
type SlotRate struct {
	// Requests is answered requests per second.
	Requests float64 `json:"requests"`
	// Errors is 5xx answers per second, vipswap's own included, and
	// answers cut off.
	Errors float64 `json:"errors"`
	// P50 and P99 are the latencies under which half and 99 % of that
	// second's requests were answered, in milliseconds (the upper bound of
	// the histogram bucket); absent in a second without requests.
	P50 float64 `json:"p50_ms,omitempty"`
	P99 float64 `json:"p99_ms,omitempty"`
}

// ShiftRequest is the body of POST /v1/shift.
type ShiftRequest struct {
	ChangeRequest
	// To is the slot that gets Weight of prod's new requests.
	To string `json:"to"`
	// Weight is its share in percent, 0 to 100, with at most one decimal:
	// 100 completes the shift (To becomes active), 0 sends everything back
	// to the active slot.
	Weight *float64 `json:"weight"`
}

// RolloutRequest is the body of POST /v1/rollout: a plan given here, or a
// named plan of the configuration (rollouts:), or both (these fields win).
type RolloutRequest struct {
	ChangeRequest
	// To is the slot traffic moves to.
	To string `json:"to"`
	// Plan names a plan under rollouts: in the configuration.
	Plan string `json:"plan,omitempty"`
	// Steps are the canary's weights in percent, in order; the last is 100.
	Steps []float64 `json:"steps,omitempty"`
	// Interval is how long each step lasts (a duration such as "1m").
	Interval string `json:"interval,omitempty"`
	// Pause waits for a promote after every step but the last; absent
	// keeps the plan's setting.
	Pause *bool `json:"pause,omitempty"`
	// SkipShadow starts a plan that has a shadow gate without running
	// it: a rollout start never runs the gate (a deploy does, before its
	// first step), so one of such a plan is refused unless it says so.
	SkipShadow bool `json:"skip_shadow,omitempty"`
}

// PromoteRequest is the body of POST /v1/promote.
type PromoteRequest struct {
	ChangeRequest
	// Full goes to 100% at once and ends the rollout.
	Full bool `json:"full,omitempty"`
}

// RolloutStatus is the answer of GET /v1/rollout.
type RolloutStatus struct {
	// Running is false when no rollout runs; the other fields are then
	// absent, but Weights.
	Running bool `json:"running"`
	// Weights is prod's split now, in percent.
	Weights map[string]float64 `json:"weights"`
	// To and From are the canary and the stable (active) slot.
	To   string `json:"to,omitempty"`
	From string `json:"from,omitempty"`
	// Plan names the configured plan, if any.
	Plan string `json:"plan,omitempty"`
	// Steps are the plan's weights in percent; Step is the current one's
	// index.
	Steps []float64 `json:"steps,omitempty"`
	Step  int       `json:"step"`
	// StepStarted is when the current step began; StepSeconds its length;
	// LeftSeconds what remains of it (0 once over: it waits for enough
	// requests or a promote).
	StepStarted time.Time `json:"step_started,omitzero"`
	StepSeconds float64   `json:"step_seconds,omitempty"`
	LeftSeconds float64   `json:"left_seconds,omitempty"`
	// Paused is true while it waits for a promote.
	Paused bool `json:"paused,omitempty"`
	// PausesAfter is true when the current step, once its interval and
	// analysis are done, waits for a promote (a plan with pause).
	PausesAfter bool `json:"pauses_after,omitempty"`
	// Started is when the rollout began.
	Started time.Time `json:"started,omitzero"`
	// Analysis is what the canary is judged by, and the latest figures.
	Analysis *Analysis `json:"analysis,omitempty"`
}

// Analysis is a rollout's judgement of its canary.
type Analysis struct {
	// WindowSeconds is how much recent traffic is judged.
	WindowSeconds float64 `json:"window_seconds"`
	// MinRequests is how many canary requests a verdict needs.
	MinRequests int `json:"min_requests"`
	// MaxErrorRate, MaxP99MS, MaxErrorRateRatio, MaxP99Ratio are the bounds
	// (0: none).
	MaxErrorRate      float64 `json:"max_error_rate,omitempty"`
	MaxP99MS          float64 `json:"max_p99_ms,omitempty"`
	MaxErrorRateRatio float64 `json:"max_error_rate_ratio,omitempty"`
	MaxP99Ratio       float64 `json:"max_p99_ratio,omitempty"`
	// Paths are the path prefixes judged on their own as well.
	Paths []string `json:"paths,omitempty"`
	// Canary and Stable are the figures over the window.
	Canary SlotFigures `json:"canary"`
	Stable SlotFigures `json:"stable"`
	// Enough is false while the canary has too few requests to judge.
	Enough bool `json:"enough"`
	// Verdict is "pass", "waiting for requests", or the breach that aborts.
	Verdict string `json:"verdict"`
}

// SlotFigures are a slot's prod figures over an analysis window: the
// requests prod's weights sent it (or an affinity cookie vipswap issued
// kept there), which the analysis judges, and apart from them the ones a
// pin header or a route steered there, which it does not.
type SlotFigures struct {
	// Requests and Errors are the judged requests and the errors (5xx,
	// failed, cut off) among them.
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// ErrorRate is the rate judged: with each client source counting at
	// most twice the median source's requests (WeighedRequests of them).
	ErrorRate       float64 `json:"error_rate"`
	WeighedRequests float64 `json:"weighed_requests"`
	// Sources is how many client source groups sent the judged requests
	// (0 when the data plane cannot tell).
	Sources int `json:"sources"`
	// P99MS is the instances' p99 latency (request sent to response
	// head) of the judged requests, in milliseconds.
	P99MS float64 `json:"p99_ms"`
	// SteeredRequests and SteeredErrors count what a pin or a route sent
	// to the slot: shown, not judged.
	SteeredRequests uint64 `json:"steered_requests"`
	SteeredErrors   uint64 `json:"steered_errors"`
	// Paths are the judged requests under each watched path prefix.
	Paths []PathFigures `json:"paths,omitempty"`
}

// PathFigures are the judged requests under one path prefix; ErrorRate is
// the rate judged, each source weighed as for the slot.
type PathFigures struct {
	Prefix    string  `json:"prefix"`
	Requests  uint64  `json:"requests"`
	Errors    uint64  `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
}
