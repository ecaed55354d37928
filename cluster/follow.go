// Package cluster is how a node follows the state store it shares with
// other nodes: the follow loop (the store's watch, and a read every Tick
// that is the authority), what the node knows of the store's reachability,
// the start from the store or from the local copy of the last state, and
// the local copy itself. It decides; the controller, behind the Node
// interface, puts states in force. A single node's store is a cluster of
// one: the loop then only ever finds what the node wrote itself.
package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Tick is how often a follower reads the store besides watching it: to
// know whether it can reach it, and to catch up with a change a watch
// missed.
const Tick = time.Second

// Node is the side of the node that holds the state in force: the
// follower tells it what the store holds, it decides under its own locks
// whether that changes anything.
type Node interface {
	// Generation counts the states put in force so far. The follower
	// reads it before each read of the store, for Adopt to tell a read
	// that raced a change of the node's own.
	Generation() uint64
	// Adopt puts st at rev, which another node committed, in force: from
	// the watch (authoritative false) if rev is newer than the revision
	// in force; from a read (authoritative) if it is not the state in
	// force and no state was put in force since generation gen.
	Adopt(st state.State, rev store.Revision, authoritative bool, gen uint64)
	// WriteBack stores the state in force when the store holds none
	// (etcd was recreated empty).
	WriteBack()
	// NotApplied records that the store holds a state the node does not
	// apply: rev 0 and err when it holds one it cannot read.
	NotApplied(rev store.Revision, err error)
}

// Source is what a follower reads of the store: store.Store has it.
type Source interface {
	// Load returns the state the store holds and its revision, as
	// store.Store.Load does.
	Load(ctx context.Context) (state.State, store.Revision, error)
	// Watch returns the changes committed from now on, as
	// store.Store.Watch does.
	Watch(ctx context.Context) <-chan store.Event
}

// Follower applies what other nodes commit to the store: from the
// store's watch at once, and from a read every Tick, which also tells
// whether the store is reachable.
//
// The read is the authority: when it finds a revision that is not the one
// in force (lower after etcd was restored from a backup or recreated, or
// than a local copy's), the node takes what the store holds, unless a
// change of the node's own raced the read (Node.Adopt tells).
type Follower struct {
	// Store is the store followed.
	Store Source
	// Reach records whether the store answers.
	Reach *Reachability
	// Node puts what the store holds in force.
	Node Node
	// Tick is how often the store is read; 0 means the package's Tick.
	Tick time.Duration
}

// Run follows the store until ctx ends.
func (f Follower) Run(ctx context.Context) {
	every := f.Tick
	if every <= 0 {
		every = Tick
	}
	events := f.Store.Watch(ctx)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // the store is closing
				continue
			}
			f.Reach.Answered(nil)
			f.Node.Adopt(ev.State, ev.Revision, false, 0)
		case <-tick.C:
			gen := f.Node.Generation()
			st, rev, err := f.Store.Load(ctx)
			if ctx.Err() != nil {
				return
			}
			f.Reach.Answered(err)
			switch {
			case err == nil:
				f.Node.Adopt(st, rev, true, gen)
			case errors.Is(err, store.ErrNotFound):
				f.Node.WriteBack()
			case !errors.Is(err, store.ErrUnavailable):
				f.Node.NotApplied(0, err) // reachable, but what it holds is unreadable
			}
		}
	}
}
