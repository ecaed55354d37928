package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// followTick is how often the controller reads the store besides watching
// it: to know whether it can reach it, and to catch up with a change a
// watch missed.
const followTick = time.Second

// StoreStatus says whether this node reaches its state store.
type StoreStatus struct {
	// Reachable is false while the store cannot be read or written;
	// changes are then refused and the node serves the last state it had.
	Reachable bool `json:"reachable"`
	// Error is why not, while unreachable.
	Error string `json:"error,omitempty"`
	// Since is when Reachable last changed (or the controller started).
	Since time.Time `json:"since"`
	// LocalCopy is true while the node serves the local copy of the last
	// state it saw, having started while the store was out of reach.
	LocalCopy bool `json:"local_copy,omitempty"`
}

// storeHealth tracks whether the store answers; guarded by c.mu.
type storeHealth struct {
	StoreStatus
}

// follow applies what other nodes commit: from the store's watch at once,
// and from a read every followTick, which also tells whether the store is
// reachable. With a single-node store it only ever finds what this node
// wrote itself.
func (c *Controller) follow() {
	events := c.cfg.Store.Watch(c.ctx)
	tick := time.NewTicker(followTick)
	defer tick.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // the store is closing
				continue
			}
			c.storeAnswered(nil)
			c.adopt(ev.State, ev.Revision)
		case <-tick.C:
			st, rev, err := c.cfg.Store.Load(c.ctx)
			if c.ctx.Err() != nil {
				return
			}
			c.storeAnswered(err)
			if err == nil {
				c.adopt(st, rev)
			}
		}
	}
}

// storeAnswered records whether the store answered a call, and logs when
// that changes.
func (c *Controller) storeAnswered(err error) {
	if err != nil && !errors.Is(err, store.ErrUnavailable) {
		return // an answer, even a bad one, is not unreachability
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h := &c.store
	switch {
	case err == nil && !h.Reachable:
		c.log.Info("state store reachable again", "after", time.Since(h.Since).Round(time.Millisecond))
		h.StoreStatus = StoreStatus{Reachable: true, Since: time.Now().UTC()}
	case err != nil && h.Reachable:
		c.log.Warn("state store unreachable: serving the last state, refusing changes", "err", err)
		h.StoreStatus = StoreStatus{Reachable: false, Error: err.Error(), Since: time.Now().UTC()}
	case err != nil:
		h.Error = err.Error()
	}
}

// unreachable returns the error a change gets while the store is out of
// reach, or nil.
func (c *Controller) unreachable(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.store.Reachable {
		return nil
	}
	what := "the state store is unreachable"
	if c.store.LocalCopy {
		what = "this node started while the state store was unreachable and serves its local copy of the last state"
	}
	return &Error{Kind: Unavailable, Err: fmt.Errorf("%s not applied: %s (since %s: %s); the node keeps serving the last state it had",
		op, what, c.store.Since.Local().Format(time.TimeOnly), c.store.Error)}
}

// adopt puts a state another node committed in force, if it is newer than
// the one in force: routing tables, slots and their probes follow, and the
// rollout's driver looks at it.
func (c *Controller) adopt(st state.State, rev store.Revision) {
	c.write.Lock()
	defer c.write.Unlock()
	defer c.flush()
	c.mu.Lock()
	if rev <= c.rev {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	// A managed slot another node added: this node runs its own replicas
	// of it too (each node routes to the instances it runs).
	for name, spec := range st.Slots {
		if spec.Run != nil && c.cfg.Launcher != nil && c.running(name) == nil {
			if err := c.cfg.Launcher.Launch(name, *spec.Run); err != nil {
				c.log.Error("could not start the instances of a slot added elsewhere", "slot", name, "err", err)
			}
		}
	}
	c.mu.Lock()
	if rev <= c.rev {
		c.mu.Unlock()
		return
	}
	if err := st.Check(namesOf(members(st, c.cfg.Slots, c.running))); err != nil {
		c.mu.Unlock()
		c.log.Error("a state committed elsewhere does not fit this node's configuration; keeping the one in force", "revision", rev, "err", err)
		return
	}
	c.store.LocalCopy = false
	c.putInForceLocked(st, rev)
	c.log.Info("state changed elsewhere", "revision", rev, "active", st.Active, "prod", describeSplit(st))
	c.wake()
}

// StoreStatus returns whether this node reaches its state store.
func (c *Controller) StoreStatus() StoreStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.store.StoreStatus
}

// loadOrSeed returns the stored state, seeding the store from the
// configuration when it is empty. Two nodes seeding at once agree: the
// loser of the compare-and-swap reads the winner's. When the store is out
// of reach and lastSeen is set, it returns the last state this node saw.
func loadOrSeed(ctx context.Context, cfg Config, names []string) (st state.State, rev store.Revision, fromCopy bool, err error) {
	for range 3 {
		st, rev, err = cfg.Store.Load(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if st, err = state.Seed(cfg.Active, names); err != nil {
				return st, 0, false, err
			}
			seed := store.Entry{Time: time.Now().UTC(), Actor: "local", Operation: "seed", To: st.Active, Result: store.Applied, Reason: "first start"}
			rev, _, err = cfg.Store.CompareAndSwap(ctx, 0, st, seed)
			if errors.Is(err, store.ErrConflict) {
				continue // another node seeded it first: take its state
			}
			if err != nil {
				return st, 0, false, fmt.Errorf("seed state: %w", err)
			}
			return st, rev, false, nil
		case errors.Is(err, store.ErrUnavailable) && cfg.LastSeen != nil:
			seen, seenRev, saved, cerr := cfg.LastSeen()
			if cerr != nil {
				return st, 0, false, fmt.Errorf("%w; and no usable local copy of the state: %v", err, cerr)
			}
			cfg.Logger.Warn("state store unreachable at start: serving the local copy of the last state seen; changes are refused until the store is reached",
				"revision", seenRev, "saved", saved.Local().Format(time.DateTime), "err", err)
			return seen, seenRev, true, nil
		default:
			return st, rev, false, err
		}
	}
	return st, rev, false, err
}
