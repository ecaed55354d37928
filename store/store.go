// Package store persists vipswap's routing state with a revision and an
// append-only history of every change, so every change is a compare-and-swap
// and a restarted node serves the last state.
//
// Store is the interface every implementation (bbolt now, etcd later)
// satisfies; package storetest holds the conformance suite they must all
// pass.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vipswap/vipswap/state"
)

// Secrets is implemented by the stores that keep small secrets beside the
// state (the TLS session ticket keys every node shares): never in the
// state, the history, a dump or status, and not replicated by an import.
type Secrets interface {
	// UpdateSecret reads the secret name (nil when there is none) and
	// stores what update returns in its place, atomically: when another
	// writer changed it meanwhile, update runs again on the new value.
	// When update returns the value it was given, nothing is written. It
	// returns the value stored.
	UpdateSecret(ctx context.Context, name string, update func(cur []byte) ([]byte, error)) ([]byte, error)
}

// Revision identifies one stored version of the state. It is opaque: compare
// revisions only for equality. Zero means "no state stored yet".
type Revision uint64

// ErrNotFound is returned by Load when the store holds no state yet, and by
// Measure when no entry has the given ID.
var ErrNotFound = errors.New("not found")

// ErrConflict is wrapped by *ConflictError.
var ErrConflict = errors.New("revision conflict")

// ConflictError is returned by CompareAndSwap when the stored revision is not
// the expected one. Nothing was written.
type ConflictError struct {
	// Expected is the revision the caller passed.
	Expected Revision
	// Current is the revision the store holds.
	Current Revision
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("state changed concurrently: expected revision %d, current revision is %d", e.Expected, e.Current)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// ErrUnavailable is wrapped by *UnavailableError.
var ErrUnavailable = errors.New("store unavailable")

// UnavailableError is returned when the store cannot be reached (a cluster
// store's servers are down or out of reach) within its request timeout.
// Nothing was written, or, for a write that timed out, its outcome is
// unknown until the next read.
type UnavailableError struct {
	// Store names the store: "etcd http://10.0.0.5:2379 /vipswap/".
	Store string
	// Err is what reaching it failed with.
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("the state store (%s) is unreachable: %v", e.Store, e.Err)
}

// Unwrap makes errors.Is(err, ErrUnavailable) true, and keeps the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// Result values of an Entry.
const (
	Applied = "applied"
	Refused = "refused"
	// Failed is a release (deploy, rolling update) that stopped at a step.
	Failed = "failed"
)

// Step is one step of a release (vipswap deploy or rolling) in its
// history entry.
type Step struct {
	// Name says what the step did ("start", "healthy", "switch", ...).
	Name string `json:"name"`
	// Start is when it began; Duration how long it took.
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	// Result is "ok" or "failed".
	Result string `json:"result"`
	// Detail says what it saw or why it failed.
	Detail string `json:"detail,omitempty"`
}

// Entry is one record of the history: an operation someone asked for and
// what came of it.
type Entry struct {
	// ID numbers entries in the order they were recorded, from 1. The store
	// assigns it.
	ID uint64 `json:"id"`
	// Time is when the operation was decided.
	Time time.Time `json:"time"`
	// Actor is who asked: a token's name, or "local".
	Actor string `json:"actor"`
	// Operation is "seed", "swap", "rollback", "drain", "ready", "reload",
	// "repair", "upgrade" (a new vipswap binary took over) or "restart" (a
	// vipswap process started on a state file another one served).
	Operation string `json:"operation"`
	// From and To are the active slot before and after a swap or rollback.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Instance is "slot/host:port" for drain and ready.
	Instance string `json:"instance,omitempty"`
	// Forced reports that the operation overrode a health check.
	Forced bool `json:"forced,omitempty"`
	// Reason is the operator's reason, if given.
	Reason string `json:"reason,omitempty"`
	// Changes says, one line each, what the operation changed beyond the
	// fields above (a reload: instances added and removed, settings).
	Changes []string `json:"changes,omitempty"`
	// Result is Applied, Refused, or Failed (a release that stopped at a step).
	Result string `json:"result"`
	// Error says why it was refused or failed.
	Error string `json:"error,omitempty"`
	// Revision is the state revision an applied operation produced.
	Revision Revision `json:"revision,omitempty"`
	// Measurement is what the data plane saw around an applied swap or
	// rollback; nil until the old slot has drained (or the measurement gave
	// up). For a release, what prod served while it ran.
	Measurement *Measurement `json:"measurement,omitempty"`
	// Steps are a release's steps, in order.
	Steps []Step `json:"steps,omitempty"`
}

// Measurement is what the data plane counted around a change that moved
// traffic: from a while before it (Start) until a while after it, or until
// the old slot had no request in flight if that took longer (End).
type Measurement struct {
	// Served counts prod requests answered in the window (by an instance
	// or by vipswap).
	Served uint64 `json:"served"`
	// Failed counts prod requests vipswap could not get answered in the
	// window: its own 5xx, connection errors and timeouts, broken-off
	// answers.
	Failed uint64 `json:"failed"`
	// InstanceErrors counts prod requests the instances answered with a
	// 5xx in the window: what the clients received from the application.
	InstanceErrors uint64 `json:"instance_errors,omitempty"`
	// ClientErrors counts prod requests vipswap answered with a 4xx for
	// the client's own mistake (never failures).
	ClientErrors uint64 `json:"client_errors,omitempty"`
	// Drained is how long the old slot took to have no request in flight.
	Drained time.Duration `json:"drained_ns"`
	// Complete is false when the measurement gave up before the old slot
	// drained.
	Complete bool `json:"complete"`
	// Start and End bound the window. Zero in entries recorded before
	// vipswap measured a window (the count then ran from the change until
	// the old slot drained).
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`
	// Listeners holds each listener's figures in the window, by name.
	Listeners map[string]Window `json:"listeners,omitempty"`
	// Converged is how long a load balancer outside vipswap (HAProxy)
	// took to show the change when read back; zero with vipswap's proxy.
	Converged time.Duration `json:"converged_ns,omitempty"`
	// Node names the node that measured, in cluster mode; empty for a
	// single vipswap.
	Node string `json:"node,omitempty"`
	// Nodes holds, in cluster mode, each node's own measurement, in the
	// order they were recorded; the fields above are then their sum (the
	// window spans all of theirs, Drained is the longest, Complete only if
	// every node's is).
	Nodes []Measurement `json:"nodes,omitempty"`
}

// Add returns the measurement of an entry that holds m once node
// measurement n is added to it. A measurement without a node, or a second
// one from the same node, is refused: each node measures a change once.
func (m *Measurement) Add(n Measurement) (Measurement, error) {
	if m == nil {
		if n.Node != "" {
			n.Nodes = []Measurement{n}
		}
		return n, nil
	}
	if n.Node == "" || m.Node == "" && len(m.Nodes) == 0 {
		return *m, errors.New("already measured")
	}
	for _, o := range m.Nodes {
		if o.Node == n.Node {
			return *m, fmt.Errorf("already measured by node %s", n.Node)
		}
	}
	nodes := append(slices.Clone(m.Nodes), n)
	sum := Measurement{Complete: true, Listeners: make(map[string]Window), Nodes: nodes}
	for i, o := range nodes {
		sum.Served += o.Served
		sum.Failed += o.Failed
		sum.InstanceErrors += o.InstanceErrors
		sum.ClientErrors += o.ClientErrors
		sum.Drained = max(sum.Drained, o.Drained)
		sum.Converged = max(sum.Converged, o.Converged)
		sum.Complete = sum.Complete && o.Complete
		if i == 0 || o.Start.Before(sum.Start) {
			sum.Start = o.Start
		}
		if o.End.After(sum.End) {
			sum.End = o.End
		}
		for name, w := range o.Listeners {
			t := sum.Listeners[name]
			t.Requests, t.Errors, t.Failed = t.Requests+w.Requests, t.Errors+w.Errors, t.Failed+w.Failed
			t.InstanceErrors, t.ClientErrors = t.InstanceErrors+w.InstanceErrors, t.ClientErrors+w.ClientErrors
			sum.Listeners[name] = t
		}
	}
	return sum, nil
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
	InstanceErrors uint64 `json:"instance_errors,omitempty"`
	// ClientErrors counts vipswap's 4xx answers to the client's own
	// mistakes (not in Errors).
	ClientErrors uint64 `json:"client_errors,omitempty"`
}

// Retention bounds the history a store keeps. The transaction that appends
// an entry also removes, oldest first, the entries beyond MaxEntries and
// those older than MaxAge (by their Time), so the history never outgrows
// the bounds; the entry being appended is always kept. A zero field means
// no bound of that kind.
type Retention struct {
	// MaxEntries is how many entries are kept at most: those whose ID is
	// within MaxEntries of the newest. IDs are consecutive, so these are
	// the newest MaxEntries entries; a history with gaps (salvaged from a
	// damaged file) keeps fewer.
	MaxEntries int
	// MaxAge is how old an entry may get.
	MaxAge time.Duration
}

// Dump is a store's whole content in a form that does not depend on the
// store: "vipswap state export" writes one and "vipswap state import"
// reads it.
type Dump struct {
	// Format names this layout: DumpFormat.
	Format string `json:"format"`
	// Revision is the state's revision; zero when there is no state.
	Revision Revision `json:"revision"`
	// State is the routing state; nil when there is none.
	State *state.State `json:"state"`
	// History is every entry, oldest first.
	History []Entry `json:"history"`
}

// Check reports whether d can be imported: a known format, a state
// with an active and a standby slot at a revision, and history entries in
// ascending ID order, none from a later revision than the state's.
func (d Dump) Check() error {
	if d.Format != DumpFormat {
		return fmt.Errorf("unknown format %q (want %q)", d.Format, DumpFormat)
	}
	if d.State == nil {
		return errors.New("it holds no state")
	}
	if err := d.State.Validate(); err != nil {
		return fmt.Errorf("the state is not one vipswap can serve: %w", err)
	}
	if d.Revision == 0 {
		return errors.New("the state has no revision")
	}
	var last uint64
	for i, e := range d.History {
		switch {
		case e.ID <= last:
			return fmt.Errorf("history[%d]: id %d does not follow id %d", i, e.ID, last)
		case e.Result != Applied && e.Result != Refused && e.Result != Failed:
			return fmt.Errorf("history[%d] (id %d): result %q is not %s, %s or %s", i, e.ID, e.Result, Applied, Refused, Failed)
		case e.Revision > d.Revision:
			return fmt.Errorf("history[%d] (id %d): revision %d is later than the state's %d", i, e.ID, e.Revision, d.Revision)
		}
		last = e.ID
	}
	return nil
}

// DumpFormat is the Format of a Dump.
const DumpFormat = "vipswap-state/1"

// Event tells a watcher that the state changed.
type Event struct {
	// Revision is the new revision.
	Revision Revision
	// State is the new state.
	State state.State
}

// Store is revisioned persistence of one state.State and its history.
// Implementations are safe for concurrent use. Every method honours ctx
// where the backend allows it, and on any error changes nothing.
type Store interface {
	// Load returns the current state and its revision, or ErrNotFound.
	Load(ctx context.Context) (state.State, Revision, error)
	// CompareAndSwap stores s if the current revision is expected (zero when
	// the store is empty) and appends e to the history, in one transaction.
	// It returns the new revision and e as recorded (ID, Revision set). On a
	// revision mismatch it returns a *ConflictError.
	CompareAndSwap(ctx context.Context, expected Revision, s state.State, e Entry) (Revision, Entry, error)
	// Record appends an entry that changed no state (a refused operation).
	Record(ctx context.Context, e Entry) (Entry, error)
	// Measure attaches m to the entry with the given ID, as
	// Measurement.Add does: once, or once per node in cluster mode (the
	// entry then holds each node's figures and their sum). Other fields
	// never change.
	Measure(ctx context.Context, id uint64, m Measurement) error
	// Entry returns the entry with the given ID, or ErrNotFound.
	Entry(ctx context.Context, id uint64) (Entry, error)
	// History returns up to limit entries, newest first; limit <= 0 means
	// all.
	History(ctx context.Context, limit int) ([]Entry, error)
	// HistoryBefore returns up to limit entries whose ID is below before,
	// newest first: the page after the one that ended with entry before.
	// before 0 means from the newest; limit <= 0 means all.
	HistoryBefore(ctx context.Context, before uint64, limit int) ([]Entry, error)
	// Watch returns a channel that receives an Event after every change
	// committed through this store from now on. The channel is closed when
	// ctx ends or the store is closed. A watcher that falls behind misses
	// intermediate events but always receives the latest.
	Watch(ctx context.Context) <-chan Event
	// Close releases the store and closes every watch channel.
	Close() error
}
