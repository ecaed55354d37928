package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// following is the controller as cluster.Follower sees it: the follower
// decides when to adopt, write back or refuse; the controller does it
// under its own locks.
type following struct{ c *Controller }

// Generation returns how many states were put in force.
func (f following) Generation() uint64 {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	return f.c.gen
}

// Adopt is Controller.adopt.
func (f following) Adopt(st state.State, rev store.Revision, authoritative bool, gen uint64) {
	f.c.adopt(st, rev, authoritative, gen)
}

// WriteBack is Controller.writeBack.
func (f following) WriteBack() { f.c.writeBack() }

// NotApplied is Controller.notApplied.
func (f following) NotApplied(rev store.Revision, err error) { f.c.notApplied(rev, err) }

// unreachable returns the error a change gets while the store is out of
// reach, or nil.
func (c *Controller) unreachable(op string) error {
	if err := c.reach.Unreachable(op); err != nil {
		return &Error{Kind: Unavailable, Err: err}
	}
	return nil
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
			return rev == c.rev && sameJSON(st, c.st) && !c.reach.ServingCopy()
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
	if rev < c.rev && !c.reach.ServingCopy() {
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
	c.reach.LeaveCopy()
	c.putInForceAndUnlock(st, rev)
	c.log.Info("state changed elsewhere", "revision", rev, "active", st.Active, "prod", describeSplit(st))
	c.wake()
}

// notApplied records that the store holds a state this node refused (rev
// 0: one it could not read), and logs it once.
func (c *Controller) notApplied(rev store.Revision, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reach.NotApplied(rev, c.rev, err)
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
	c.reach.LeaveCopy()
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
	return c.reach.Status()
}

// sameJSON reports whether a and b encode the same: a state read back from
// the store against the one in force (times lose their monotonic reading
// on the way, so Equal's DeepEqual of a rollout would differ).
func sameJSON(a, b state.State) bool {
	ra, errA := json.Marshal(a)
	rb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ra, rb)
}
