package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// followTick is how often the controller reads the store besides watching
// it: to know whether it can reach it, and to catch up with a change a
// watch missed.
const followTick = time.Second

// LocalCopy is where a cluster node keeps the last state it put in force.
type LocalCopy interface {
	// Keep saves st at rev as the last state in force. A failure is
	// logged by the implementation, not returned: the copy is a fallback.
	Keep(st state.State, rev store.Revision)
	// LastSeen returns the last state kept, its revision and when it was
	// saved.
	LastSeen() (state.State, store.Revision, time.Time, error)
}

// storeHealth tracks whether the store answers; guarded by c.mu.
type storeHealth struct {
	wire.StoreStatus
}

// follow applies what other nodes commit: from the store's watch at once,
// and from a read every followTick, which also tells whether the store is
// reachable. With a single-node store it only ever finds what this node
// wrote itself.
//
// The read is the authority: when it finds a revision that is not the one
// in force (lower after etcd was restored from a backup or recreated, or
// than a local copy's), the node takes what the store holds, unless a
// change of this node's raced the read.
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
			c.adopt(ev.State, ev.Revision, false, 0)
		case <-tick.C:
			c.mu.Lock()
			gen := c.gen
			c.mu.Unlock()
			st, rev, err := c.cfg.Store.Load(c.ctx)
			if c.ctx.Err() != nil {
				return
			}
			c.storeAnswered(err)
			switch {
			case err == nil:
				c.adopt(st, rev, true, gen)
			case errors.Is(err, store.ErrNotFound):
				c.writeBack()
			case !errors.Is(err, store.ErrUnavailable):
				c.notApplied(0, err) // reachable, but what it holds is unreadable
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
		h.StoreStatus = wire.StoreStatus{Reachable: true, Since: time.Now().UTC()}
	case err != nil && h.Reachable:
		c.log.Warn("state store unreachable: serving the last state, refusing changes", "err", err)
		h.StoreStatus = wire.StoreStatus{Reachable: false, Error: err.Error(), Since: time.Now().UTC()}
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

// adopt puts a state another node committed in force: from the watch if
// it is newer than the one in force; from a read (authoritative) if it is
// not the one in force and no change of this node was put in force since
// generation gen, when the read started. Routing tables, slots and their
// probes follow, and the rollout's driver looks at it. A state that does
// not fit this node's configuration is not applied: the node keeps the one
// it has and says so in its status.
func (c *Controller) adopt(st state.State, rev store.Revision, authoritative bool, gen uint64) {
	c.write.Lock()
	defer c.write.Unlock()
	defer c.flush()
	current := func() bool {
		if authoritative && c.gen == gen {
			return rev == c.rev && sameJSON(st, c.st) && !c.store.LocalCopy
		}
		return rev <= c.rev
	}
	c.mu.Lock()
	if current() {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	// A managed slot another node added: this node runs its own replicas
	// of it too (each node routes to the instances it runs).
	for name, spec := range st.Slots {
		if spec.Run != nil && c.cfg.Launcher != nil && c.running(name) == nil {
			if err := c.cfg.Launcher.Launch(name, *spec.Run, spec.Version); err != nil {
				c.log.Error("could not start the instances of a slot added elsewhere", "slot", name, "err", err)
			}
		}
	}
	c.mu.Lock()
	if current() {
		c.mu.Unlock()
		return
	}
	if err := st.Check(namesOf(members(st, c.cfg.Slots, c.running))); err != nil {
		c.mu.Unlock()
		c.notApplied(rev, fmt.Errorf("it does not fit this node's configuration: %w", err))
		return
	}
	if rev < c.rev && !c.store.LocalCopy {
		c.log.Warn("the state store's revision went backwards (etcd restored from a backup, or recreated): taking the state it holds",
			"revision", rev, "was", c.rev)
	}
	if prev := c.st; !slices.Equal(prev.Prod(), st.Prod()) && rev > c.rev {
		// This node's traffic moves too: it measures its share of the
		// switch, as the node that made it does.
		drain := prev.Active
		if st.WeightOf(prev.Active) > 0 {
			drain = ""
		}
		c.startMeasure(0, rev, drain, time.Now().UTC())
	}
	c.store.LocalCopy = false
	c.putInForceAndUnlock(st, rev)
	c.log.Info("state changed elsewhere", "revision", rev, "active", st.Active, "prod", describeSplit(st))
	c.wake()
}

// notApplied records that the store holds a state this node refused (rev
// 0: one it could not read), and logs it once.
func (c *Controller) notApplied(rev store.Revision, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.store.NotApplied
	if n != nil && n.Revision == uint64(rev) && n.Error == err.Error() {
		return
	}
	c.log.Error("the state store holds a state this node does not apply: it keeps serving the one in force; repair the stored state (vipswap state import) or this node's configuration",
		"revision", rev, "in_force", c.rev, "err", err)
	c.store.NotApplied = &wire.NotApplied{Revision: uint64(rev), Error: err.Error(), Since: time.Now().UTC()}
}

// writeBack stores the state in force when the store holds none (etcd was
// recreated empty): the node goes on from what it served, and so do the
// others, which find this state. If another node wrote first, the next
// read finds its state.
func (c *Controller) writeBack() {
	c.write.Lock()
	defer c.write.Unlock()
	defer c.flush()
	c.mu.Lock()
	st := c.st
	c.mu.Unlock()
	entry := store.Entry{Time: time.Now().UTC(), Actor: "local", Operation: "seed", To: st.Active, Result: store.Applied,
		Reason: "the state store held no state (recreated?): written back from the state " + c.nodeName() + " served"}
	rev, _, err := c.cfg.Store.CompareAndSwap(c.ctx, 0, st, entry)
	if err != nil {
		if !errors.Is(err, store.ErrConflict) && c.ctx.Err() == nil {
			c.log.Error("the state store holds no state and writing back the one in force failed", "err", err)
		}
		return
	}
	c.log.Warn("the state store held no state: wrote back the one in force", "revision", rev)
	c.mu.Lock()
	c.store.LocalCopy = false
	c.putInForceAndUnlock(st, rev)
}

// nodeName names this node in history entries.
func (c *Controller) nodeName() string {
	if c.cfg.Node != "" {
		return c.cfg.Node
	}
	return "this node"
}

// StoreStatus returns whether this node reaches its state store.
func (c *Controller) StoreStatus() wire.StoreStatus {
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
			st.AffinityKey = state.NewAffinityKey()
			seed := store.Entry{Time: time.Now().UTC(), Actor: "local", Operation: "seed", To: st.Active, Result: store.Applied, Reason: "first start"}
			rev, _, err = cfg.Store.CompareAndSwap(ctx, 0, st, seed)
			if errors.Is(err, store.ErrConflict) {
				continue // another node seeded it first: take its state
			}
			if err != nil {
				return st, 0, false, fmt.Errorf("seed state: %w", err)
			}
			return st, rev, false, nil
		case errors.Is(err, store.ErrUnavailable) && cfg.LocalCopy != nil:
			seen, seenRev, saved, cerr := cfg.LocalCopy.LastSeen()
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

// sameJSON reports whether a and b encode the same: a state read back from
// the store against the one in force (times lose their monotonic reading
// on the way, so Equal's DeepEqual of a rollout would differ).
func sameJSON(a, b state.State) bool {
	ra, errA := json.Marshal(a)
	rb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ra, rb)
}
