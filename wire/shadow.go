package wire

import "time"

// ShadowRequest is the body of POST /v1/shadow: copy a sample of prod's
// requests to a slot that takes no prod traffic and compare its answers.
type ShadowRequest struct {
	ChangeRequest
	// To is the slot the copies go to.
	To string `json:"to"`
	// Percent is the share of prod's requests copied, above 0 and at most
	// 100, in steps of 0.1.
	Percent float64 `json:"percent"`
	// Methods are the methods copied; empty means GET and HEAD. Any other
	// is a danger: a copied POST writes twice.
	Methods []string `json:"methods,omitempty"`
	// Duration, if set ("5m"), ends the shadow by itself after that long.
	Duration string `json:"duration,omitempty"`
	// IgnoreFields are JSON fields left out of the comparison, besides the
	// configuration's: a name matches at any depth, "$.a.b" a path from
	// the root.
	IgnoreFields []string `json:"ignore_fields,omitempty"`
	// IgnoreHeaders are response headers left out of the comparison,
	// besides the configuration's.
	IgnoreHeaders []string `json:"ignore_headers,omitempty"`
}

// Shadow is a running shadow and what the mirror counted of it: GET
// /v1/shadow, and the shadow field of GET /v1/status (null when none
// runs).
type Shadow struct {
	// To is the slot the copies go to.
	To string `json:"to"`
	// Percent is the share of prod's requests copied.
	Percent float64 `json:"percent"`
	// Methods are the methods copied.
	Methods []string `json:"methods"`
	// Started is when it began; Until, when set, when it ends by itself.
	Started time.Time  `json:"started"`
	Until   *time.Time `json:"until,omitempty"`
	// IgnoreFields and IgnoreHeaders are left out of the comparison (the
	// configuration's and the shadow's own).
	IgnoreFields  []string `json:"ignore_fields,omitempty"`
	IgnoreHeaders []string `json:"ignore_headers,omitempty"`
	// Actor started it.
	Actor string `json:"actor,omitempty"`
	// Figures are what this node's mirror counted since the shadow began;
	// absent on a data plane that does not mirror (HAProxy alone).
	Figures *ShadowFigures `json:"figures,omitempty"`
}

// ShadowFigures are a shadow's counts on one node, since it began.
type ShadowFigures struct {
	// Sampled counts the prod requests picked to be copied.
	Sampled uint64 `json:"sampled"`
	// Same and Differ count the copies whose answers matched prod's or
	// not; Error those the target slot failed (no answer, a refused or
	// broken connection, a timeout, an invalid answer).
	Same   uint64 `json:"same"`
	Differ uint64 `json:"differ"`
	Error  uint64 `json:"error"`
	// Dropped counts the copies not sent, by reason (queue_full,
	// memory, too_large, no_instance, prod_failed, stopped), in
	// Dropped["total"] too.
	Dropped map[string]uint64 `json:"dropped"`
	// BodyUncompared counts the compared answers whose bodies were both
	// longer than the comparison's limit: compared by status and type
	// alone.
	BodyUncompared uint64 `json:"body_uncompared"`
	// TargetErrors counts the target's failures (Error) and the 5xx it
	// answered where prod did not.
	TargetErrors uint64 `json:"target_errors"`
	// DifferRate is Differ over the compared (Same + Differ); ErrorRate
	// is TargetErrors over the copies sent (Same + Differ + Error).
	DifferRate float64 `json:"differ_rate"`
	ErrorRate  float64 `json:"error_rate"`
	// Latency of prod's and the target's instances (request sent to
	// response head) over the compared pairs, in milliseconds.
	ProdP50MS   float64 `json:"prod_p50_ms"`
	ProdP99MS   float64 `json:"prod_p99_ms"`
	TargetP50MS float64 `json:"target_p50_ms"`
	TargetP99MS float64 `json:"target_p99_ms"`
	// P99Ratio is TargetP99MS over ProdP99MS (0 until both are known).
	P99Ratio float64 `json:"p99_ratio"`
	// Stopped, when set, says why the mirror stopped copying by itself
	// (the target's error rate made it a load problem).
	Stopped string `json:"stopped,omitempty"`
	// Samples are the latest differing pairs (a bounded number).
	Samples []ShadowDiff `json:"samples"`
}

// ShadowDiff is one request whose copy was answered differently.
type ShadowDiff struct {
	Time time.Time `json:"time"`
	// Request is the request line: "GET /api/test?x=1".
	Request string `json:"request"`
	// ProdStatus and TargetStatus are the two answers' statuses (0: the
	// target gave none).
	ProdStatus   int `json:"prod_status"`
	TargetStatus int `json:"target_status"`
	// Where says what differs first: "status", "content-type",
	// "header X-Foo", "$.user.name" (a JSON path), "byte 120", or the
	// target's failure.
	Where string `json:"where"`
	// Prod and Target, when short, are the two values found there.
	Prod   string `json:"prod,omitempty"`
	Target string `json:"target,omitempty"`
}
