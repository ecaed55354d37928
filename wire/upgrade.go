package wire

// UpgradeRequest is the body of POST /v1/upgrade: replace the running
// vipswap with a new process, handing it every listening socket.
type UpgradeRequest struct {
	ChangeRequest
	// Binary is the absolute path of the vipswap to start; empty: the one
	// this process was started as (the path it was started by, so a
	// package that replaced the file is started anew).
	Binary string `json:"binary,omitempty"`
}

// UpgradeResult is what POST /v1/upgrade answers once the new process is
// ready and the old one stopped accepting (it then finishes its requests
// in flight and exits).
type UpgradeResult struct {
	// OldVersion and NewVersion are the two builds' `vipswap version`.
	OldVersion string `json:"old_version"`
	NewVersion string `json:"new_version"`
	// Binary is the file the new process runs.
	Binary string `json:"binary"`
	// OldPID is the process that stops.
	OldPID int `json:"old_pid"`
	// Seconds is how long the new process took to become ready.
	Seconds float64 `json:"seconds"`
}
