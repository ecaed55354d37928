package api

import (
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/release"
)

// The controller's results and requests are the API's wire types: the
// admin server encodes them as JSON as they are. The aliases let the client
// and the CLI name them from the package they talk to.
type (
	// Status is control.Status.
	Status = control.Status
	// ListenerStatus is control.ListenerStatus.
	ListenerStatus = control.ListenerStatus
	// SlotStatus is control.SlotStatus.
	SlotStatus = control.SlotStatus
	// PerListener is control.PerListener.
	PerListener = control.PerListener
	// InstanceStatus is control.InstanceStatus.
	InstanceStatus = control.InstanceStatus
	// Check is control.Check.
	Check = control.Check
	// ChangeRequest is control.ChangeRequest.
	ChangeRequest = control.ChangeRequest
	// Change is control.Change.
	Change = control.Change
	// HistoryEntry is control.HistoryEntry.
	HistoryEntry = control.HistoryEntry
	// Measurement is control.Measurement.
	Measurement = control.Measurement
	// Window is control.Window.
	Window = control.Window
	// RateSample is control.RateSample.
	RateSample = control.RateSample
	// SlotRate is control.SlotRate.
	SlotRate = control.SlotRate
	// ShiftRequest is control.ShiftRequest.
	ShiftRequest = control.ShiftRequest
	// RolloutRequest is control.RolloutRequest.
	RolloutRequest = control.RolloutRequest
	// PromoteRequest is control.PromoteRequest.
	PromoteRequest = control.PromoteRequest
	// RolloutStatus is control.RolloutStatus.
	RolloutStatus = control.RolloutStatus
	// RouteStatus is control.RouteStatus.
	RouteStatus = control.RouteStatus
	// AddSlotRequest is control.AddSlotRequest.
	AddSlotRequest = control.AddSlotRequest
	// RouteRequest is control.RouteRequest.
	RouteRequest = control.RouteRequest
	// StageRequest is control.StageRequest.
	StageRequest = control.StageRequest
	// Analysis is control.Analysis.
	Analysis = control.Analysis
	// SlotFigures is control.SlotFigures.
	SlotFigures = control.SlotFigures
	// DeployRequest is the body of POST /v1/deploy.
	DeployRequest = release.DeployRequest
	// RollingRequest is the body of POST /v1/rolling.
	RollingRequest = release.RollingRequest
	// Progress is a release (deploy, rolling update), from GET
	// /v1/releases/{id}.
	Progress = release.Progress
	// Step is one step of a release.
	Step = control.Step
)

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
