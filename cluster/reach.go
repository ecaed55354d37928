package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// Reachability is what a node knows of its state store: whether it
// answers and since when, whether the node serves its local copy of the
// last state, and the stored state it does not apply, if any. Its methods
// are safe for concurrent use; they call nothing outside the package, so
// a caller may hold its own locks around them.
type Reachability struct {
	log *slog.Logger
	mu  sync.Mutex
	s   wire.StoreStatus
}

// NewReachability returns what a node knows of its store as it starts:
// fromCopy when it started from its local copy of the last state, and
// refused, if set, the stored state it found and could not apply (the
// store answered then). Transitions are logged to log.
func NewReachability(log *slog.Logger, fromCopy bool, refused *wire.NotApplied) *Reachability {
	r := &Reachability{log: log, s: wire.StoreStatus{
		Reachable: !fromCopy || refused != nil, LocalCopy: fromCopy, NotApplied: refused, Since: time.Now().UTC(),
	}}
	if fromCopy && refused == nil {
		r.s.Error = "not reached since this node started"
	}
	return r
}

// Answered records whether the store answered a call (err is the call's),
// and logs when that changes. An error other than store.ErrUnavailable is
// an answer, even a bad one.
func (r *Reachability) Answered(err error) {
	if err != nil && !errors.Is(err, store.ErrUnavailable) {
		return // an answer, even a bad one, is not unreachability
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &r.s
	switch {
	case err == nil && !h.Reachable:
		r.log.Info("state store reachable again", "after", time.Since(h.Since).Round(time.Millisecond))
		*h = wire.StoreStatus{Reachable: true, Since: time.Now().UTC()}
	case err != nil && h.Reachable:
		r.log.Warn("state store unreachable: serving the last state, refusing changes", "err", err)
		*h = wire.StoreStatus{Reachable: false, Error: err.Error(), Since: time.Now().UTC()}
	case err != nil:
		h.Error = err.Error()
	}
}

// Status returns what the node knows of its store, for its status.
func (r *Reachability) Status() wire.StoreStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s
}

// Unreachable returns why operation op is not applied while the store is
// out of reach, or nil when it is reachable.
func (r *Reachability) Unreachable(op string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s.Reachable {
		return nil
	}
	what := "the state store is unreachable"
	if r.s.LocalCopy {
		what = "this node started while the state store was unreachable and serves its local copy of the last state"
	}
	return fmt.Errorf("%s not applied: %s (since %s: %s); the node keeps serving the last state it had",
		op, what, r.s.Since.Local().Format(time.TimeOnly), r.s.Error)
}

// ServingCopy reports whether the node still serves the local copy it
// started from.
func (r *Reachability) ServingCopy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.s.LocalCopy
}

// LeaveCopy records that the node put in force a state the store holds:
// it no longer serves its local copy.
func (r *Reachability) LeaveCopy() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.LocalCopy = false
}

// NotApplied records that the store holds, at rev, a state the node does
// not apply (rev 0: one it could not read) for reason err, while it keeps
// inForce; it logs it once per revision and reason.
func (r *Reachability) NotApplied(rev, inForce store.Revision, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.s.NotApplied
	if n != nil && n.Revision == uint64(rev) && n.Error == err.Error() {
		return
	}
	r.log.Error("the state store holds a state this node does not apply: it keeps serving the one in force; repair the stored state (vipswap state import) or this node's configuration",
		"revision", rev, "in_force", inForce, "err", err)
	r.s.NotApplied = &wire.NotApplied{Revision: uint64(rev), Error: err.Error(), Since: time.Now().UTC()}
}

// Applied records that the node put in force a state the store holds:
// nothing stored is refused any more.
func (r *Reachability) Applied() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.NotApplied = nil
}
