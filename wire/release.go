package wire

import "time"

// DeployRequest is the body of POST /v1/deploy.
type DeployRequest struct {
	ChangeRequest
	// Slot is where the new version starts: a slot that takes no prod
	// traffic (the standby, an idle one), or a new one.
	Slot string `json:"slot"`
	// Version labels what it runs; {version} in the command is it.
	Version string `json:"version"`
	// Command is what runs, with {port} and {version}; empty keeps the
	// slot's run block (configured or stored by the last deploy). A new
	// slot needs one.
	Command []string `json:"command,omitempty"`
	// Replicas is how many instances run; zero keeps the slot's number (a
	// new slot: as many as the active slot runs, else 1).
	Replicas int `json:"replicas,omitempty"`
	// Strategy is "swap" (default: one atomic switch) or "rollout" (a
	// plan, judged by the analysis, aborted on a breach).
	Strategy string `json:"strategy,omitempty"`
	// Plan, Steps and Interval describe the rollout, as for POST
	// /v1/rollout.
	Plan     string    `json:"plan,omitempty"`
	Steps    []float64 `json:"steps,omitempty"`
	Interval string    `json:"interval,omitempty"`
	// Warmup is how many GET requests to WarmupPath (default "/") each new
	// instance gets before the gates.
	Warmup     int    `json:"warmup,omitempty"`
	WarmupPath string `json:"warmup_path,omitempty"`
	// Checks are paths the stage listener must answer with a 2xx.
	Checks []string `json:"checks,omitempty"`
	// Gates are shell commands that must exit 0, run on vipswap's host
	// with $VIPSWAP_STAGE_URL, $VIPSWAP_SLOT and $VIPSWAP_VERSION set.
	Gates []string `json:"gates,omitempty"`
	// Shadow, if set, is a gate before the switch: prod's requests are
	// copied to the new slot for its duration and the answers compared;
	// a breach of its bounds fails the deploy before any user reaches the
	// new version, with the differing requests in its history entry.
	Shadow *ShadowGate `json:"shadow,omitempty"`
	// Keep is how long the old slot stays running after the switch, so
	// that a rollback is instant (default 10m); a slot added at runtime
	// is removed after it, a configured one stays as the standby.
	Keep string `json:"keep,omitempty"`
	// Timeout bounds each wait: for health, for gates, for the drain
	// (default 2m).
	Timeout string `json:"timeout,omitempty"`
}

// RollingRequest is the body of POST /v1/rolling.
type RollingRequest struct {
	ChangeRequest
	// Slot is the slot whose instances are replaced in place.
	Slot string `json:"slot"`
	// Version labels the new version; {version} in the command is it.
	// Empty keeps the slot's.
	Version string `json:"version,omitempty"`
	// Command is what the new instances run; empty keeps the slot's run
	// block (restarting each instance with a new {version}).
	Command []string `json:"command,omitempty"`
	// MaxUnavailable is how many instances are out of rotation at once
	// (default 1); the slot must keep at least one serving.
	MaxUnavailable int `json:"max_unavailable,omitempty"`
	// Warmup is how many GET requests to WarmupPath (default "/") each new
	// instance gets before it takes traffic again.
	Warmup     int    `json:"warmup,omitempty"`
	WarmupPath string `json:"warmup_path,omitempty"`
	// Timeout bounds each wait: for the requests in flight, for the new
	// instance to be healthy (default 2m).
	Timeout string `json:"timeout,omitempty"`
}

// Progress is a release as GET /v1/releases/{id} shows it: while it runs
// and once it has ended.
type Progress struct {
	// ID names the release.
	ID string `json:"id"`
	// Kind is "deploy" or "rolling".
	Kind string `json:"kind"`
	// Slot is the slot it deploys to or updates; Version what it brings.
	Slot    string `json:"slot"`
	Version string `json:"version,omitempty"`
	// From is the slot prod followed when it began.
	From string `json:"from,omitempty"`
	// State is "running", "succeeded" or "failed".
	State string `json:"state"`
	// FailedStep names the step that failed, and Error why.
	FailedStep string `json:"failed_step,omitempty"`
	Error      string `json:"error,omitempty"`
	// Steps are the steps so far, in order; the last is running while
	// State is.
	Steps []Step `json:"steps"`
	// Healthy and Instances count the instances the current step waits
	// for, when it waits for health.
	Healthy   int `json:"healthy,omitempty"`
	Instances int `json:"instances,omitempty"`
	// Rollout is the running rollout's progress (strategy rollout).
	Rollout *RolloutStatus `json:"rollout,omitempty"`
	// Requests, Failed, InstanceErrors and ClientErrors are what prod
	// served since the release began: all answered requests, those
	// vipswap could not get answered, the 5xx the instances answered,
	// and the 4xx vipswap answered for clients' mistakes.
	Requests       uint64 `json:"requests"`
	Failed         uint64 `json:"failed"`
	InstanceErrors uint64 `json:"instance_errors"`
	ClientErrors   uint64 `json:"client_errors"`
	// Started and Ended bound it; Ended is zero while it runs.
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	// HistoryID is the history entry that records it, once it has ended.
	HistoryID uint64 `json:"history_id,omitempty"`
	// KeepUntil is when the old slot of a deploy is torn down (a slot
	// added at runtime is removed then); Kept says what happens to it.
	KeepUntil time.Time `json:"keep_until,omitzero"`
	Kept      string    `json:"kept,omitempty"`
}

// ShadowGate is a shadow run as a release's gate, and the bounds it must
// keep: "shadow for 5 minutes, at most 0.1 % differing, p99 within 20 %".
type ShadowGate struct {
	// Duration is how long prod's requests are copied (required: "5m").
	Duration string `json:"duration"`
	// Percent is the share of prod's requests copied. Zero means 100.
	Percent float64 `json:"percent,omitempty"`
	// Methods are the methods copied; empty means GET and HEAD.
	Methods []string `json:"methods,omitempty"`
	// IgnoreFields and IgnoreHeaders are left out of the comparison,
	// besides the configuration's.
	IgnoreFields  []string `json:"ignore_fields,omitempty"`
	IgnoreHeaders []string `json:"ignore_headers,omitempty"`
	// MinRequests is how many compared copies a pass needs; fewer at the
	// end fail the gate (too little evidence). Zero means 100.
	MinRequests int `json:"min_requests,omitempty"`
	// MaxDifferRate is the highest share of compared copies whose answer
	// may differ (0.001 is 0.1 %). Zero allows none.
	MaxDifferRate float64 `json:"max_differ_rate"`
	// MaxErrorRate is the highest share of copies the new slot may fail
	// or answer with a 5xx (0 allows none). Absent (nil) means 0.01.
	MaxErrorRate *float64 `json:"max_error_rate,omitempty"`
	// MaxP99Ratio bounds the new slot's p99 latency relative to prod's
	// over the same requests (1.2: within 20 %). Zero means no bound.
	MaxP99Ratio float64 `json:"max_p99_ratio,omitempty"`
}
