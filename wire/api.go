package wire

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	// Error is a one-line explanation.
	Error string `json:"error"`
	// Revision is the current state revision, on a 409 caused by a
	// concurrent change or a stale if_revision.
	Revision uint64 `json:"revision,omitempty"`
}

// Rates is the answer of GET /v1/rates: requests and errors per second per
// slot (both listeners together), one sample a second over the last five
// minutes, oldest first.
type Rates struct {
	// Samples are the per-second samples.
	Samples []RateSample `json:"samples"`
}
