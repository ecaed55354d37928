package wire

import "time"

// Event kinds: what the controller tells waiters happened.
const (
	// EventChange: a state was put in force (a change here, or one
	// another cluster node made): Revision, Operation and HistoryID (when
	// this node made it), Active.
	EventChange = "change"
	// EventHealth: an instance's health changed: Slot, Instance, Healthy.
	EventHealth = "health"
	// EventVerdict: the running rollout's analysis judged: Slot (the
	// canary), Outcome (pass, wait or breach), Reasons (the breach).
	EventVerdict = "verdict"
	// EventRollout: a rollout ended: Slot (its target), Outcome
	// (promoted or aborted), Active, Reasons (why, when this node knows).
	EventRollout = "rollout"
	// EventDrained: the slot that lost prod's traffic in a change has no
	// request in flight any more: Slot, Revision, HistoryID.
	EventDrained = "drained"
	// EventMeasured: a change's measurement is in its history entry:
	// HistoryID, Revision, Outcome ("complete", or "incomplete" when the
	// old slot had not drained within the limit).
	EventMeasured = "measured"
)

// Event is one thing that happened in the controller. Events are numbered
// upward in the order they happened, from a number a node takes from the
// clock when it starts (so a number given before a restart is below
// every one given after); a node keeps its newest ones.
type Event struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Revision  uint64    `json:"revision,omitempty"`
	HistoryID uint64    `json:"history_id,omitempty"`
	Operation string    `json:"operation,omitempty"`
	Active    string    `json:"active,omitempty"`
	Slot      string    `json:"slot,omitempty"`
	Instance  string    `json:"instance,omitempty"`
	Healthy   *bool     `json:"healthy,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Reasons   []string  `json:"reasons,omitempty"`
}

// Events is the answer of GET /v1/events: the events after the asked
// sequence number, oldest first.
type Events struct {
	Events []Event `json:"events"`
	// Next is the sequence number to ask from next time (the newest
	// event's).
	Next uint64 `json:"next"`
	// Missed is true when events after the one asked for are no longer
	// kept: the waiter reads the status or history again instead.
	Missed bool `json:"missed,omitempty"`
}
