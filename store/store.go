// Package store persists vipswap's routing state with a revision, so every
// change is a compare-and-swap and a restarted node serves the last state.
//
// Store is the interface every implementation (bbolt now, etcd later)
// satisfies; storetest holds the conformance suite they must all pass.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/vipswap/vipswap/state"
)

// Revision identifies one stored version of the state. It is opaque: compare
// revisions only for equality. Zero means "no state stored yet".
type Revision uint64

// ErrNotFound is returned by Load when the store holds no state yet.
var ErrNotFound = errors.New("no state stored")

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
	return fmt.Sprintf("state changed concurrently: expected revision %d, store has %d", e.Expected, e.Current)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// Store is revisioned persistence of one state.State. Implementations are safe
// for concurrent use. Every method honours ctx cancellation where the backend
// allows it.
type Store interface {
	// Load returns the current state and its revision, or ErrNotFound.
	Load(ctx context.Context) (state.State, Revision, error)
	// CompareAndSwap stores s if the current revision is expected (zero when
	// the store is empty) and returns the new revision. On a mismatch it
	// returns a *ConflictError and changes nothing; on any error nothing is
	// changed either.
	CompareAndSwap(ctx context.Context, expected Revision, s state.State) (Revision, error)
	// Close releases the store. Calls after Close fail.
	Close() error
}
