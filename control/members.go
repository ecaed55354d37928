package control

import (
	"context"
	"fmt"
	"slices"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
)

// Slot is one slot's membership.
type Slot struct {
	// Name is the slot's name.
	Name string
	// Addrs are its instances' host:port addresses.
	Addrs []string
	// Version labels what the slot runs; may be empty.
	Version string
	// Run is the slot's run block when vipswap starts its instances.
	Run *state.RunSpec
}

// members returns the slots that exist in st: the configured ones, less
// those removed at runtime, with those added at runtime (st.Slots); a
// managed one added at runtime has the addresses running says (nil: none).
func members(st state.State, configured []Slot, running func(string) []string) []Slot {
	byName := make(map[string]Slot, len(configured))
	names := make([]string, len(configured))
	for i, s := range configured {
		byName[s.Name], names[i] = s, s.Name
	}
	order, specs := st.Members(names, func(n string) state.SlotSpec {
		return state.SlotSpec{Instances: byName[n].Addrs, Version: byName[n].Version}
	})
	out := make([]Slot, len(order))
	for i, n := range order {
		addrs := specs[n].Instances
		if specs[n].Run != nil && running != nil {
			addrs = running(n)
		}
		out[i] = Slot{Name: n, Addrs: addrs, Version: specs[n].Version}
	}
	return out
}

// namesOf returns the slots' names, in order.
func namesOf(slots []Slot) []string {
	out := make([]string, len(slots))
	for i, s := range slots {
		out[i] = s.Name
	}
	return out
}

// setSlotsLocked makes slots the membership. An instance kept (same slot,
// same address) keeps its *route.Instance, so its counters and health
// carry on; new ones start unhealthy. It returns the probe targets to add
// and remove, which the caller hands to the checker once c.mu is released.
func (c *Controller) setSlotsLocked(slots []Slot) (added, removed []health.Target) {
	next := make(map[string][]*route.Instance, len(slots))
	for _, s := range slots {
		addrs := s.Addrs
		for _, a := range c.registered[s.Name] { // registered instances join listed ones
			if !slices.Contains(addrs, a) {
				addrs = append(slices.Clip(addrs), a)
			}
		}
		for _, a := range addrs {
			inst := c.instanceLocked(s.Name, a)
			if inst == nil {
				inst = route.NewInstance(s.Name, a)
				added = append(added, health.Target{Slot: s.Name, Addr: a})
			}
			next[s.Name] = append(next[s.Name], inst)
		}
	}
	for slot, insts := range c.instances {
		for _, i := range insts {
			if !slices.Contains(next[slot], i) {
				removed = append(removed, health.Target{Slot: slot, Addr: i.Addr})
				delete(c.healthy, i)
			}
		}
	}
	c.slots = slices.Clone(slots)
	c.instances = next
	return added, removed
}

// instanceLocked returns the instance of slot at addr, or nil.
func (c *Controller) instanceLocked(slot, addr string) *route.Instance {
	for _, i := range c.instances[slot] {
		if i.Addr == addr {
			return i
		}
	}
	return nil
}

// slotNamesLocked returns the slots' names in order.
func (c *Controller) slotNamesLocked() []string {
	names := make([]string, len(c.slots))
	for i, s := range c.slots {
		names[i] = s.Name
	}
	return names
}

// lookup finds an instance or returns a 404 that names what is missing.
func (c *Controller) lookup(slot, addr string) (*route.Instance, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.instances[slot]; !ok && !slices.Contains(c.slotNamesLocked(), slot) {
		return nil, notFound(fmt.Errorf("no slot %q", slot))
	}
	if i := c.instanceLocked(slot, addr); i != nil {
		return i, nil
	}
	return nil, notFound(fmt.Errorf("slot %q has no instance %s", slot, addr))
}

// Launcher starts the instances of managed slots added at runtime (vipswap
// slot add --run-file) and says where they listen. The controller stops
// them through Config.OnSlots once their slot is gone.
type Launcher interface {
	// Launch starts slot's instances as run says, {version} in its command
	// being version; a slot already running is left as it is.
	Launch(slot string, run state.RunSpec, version string) error
	// Addrs returns where slot's instances listen; nil when none run.
	Addrs(slot string) []string
	// Relaunch starts slot's instances anew, as run says, in place of the
	// ones running (a deploy to a slot that takes no prod traffic): Addrs
	// returns the new ones from now on. finish(true) stops the old ones
	// once they have nothing in flight; finish(false) puts them back and
	// stops the new ones.
	Relaunch(slot string, run state.RunSpec, version string) (finish func(keep bool), err error)
	// Replace stops the instance of slot at addr and starts command in its
	// place, on the same address (a rolling update).
	Replace(ctx context.Context, slot, addr string, command []string, version string) error
}

// running returns the addresses of a runtime managed slot, for members.
func (c *Controller) running(slot string) []string {
	if c.cfg.Launcher == nil {
		return nil
	}
	return c.cfg.Launcher.Addrs(slot)
}

// SetRegistered makes the instances that registered themselves (cluster
// mode: each holds an etcd lease) members of their slots, beside the
// listed ones, from now on: registered maps a slot to its registered
// addresses, whole. An instance of a slot that does not exist waits until
// the slot does. Health checks apply to registered instances as to any.
// A registration that is not host:port, or that names vipswap's own
// listeners or admin address, is ignored with a warning: anyone who can
// write to etcd must not make a node route to itself.
func (c *Controller) SetRegistered(registered map[string][]string) {
	clean := make(map[string][]string, len(registered))
	ignored, example, why := 0, "", ""
	for slot, addrs := range registered {
		for _, a := range addrs {
			err := validAddr(a)
			if err == nil && c.cfg.Own != nil {
				if key := c.cfg.Own(a); key != "" {
					err = fmt.Errorf("it is this vipswap's own address (%s)", key)
				}
			}
			if err != nil {
				ignored++
				example, why = slot+"/"+a, err.Error()
				continue
			}
			clean[slot] = append(clean[slot], a)
		}
	}
	if ignored > 0 {
		c.log.Warn("ignoring registered instances", "count", ignored, "example", example, "why", why)
	}
	registered = clean
	c.write.Lock()
	defer c.write.Unlock()
	defer c.flush()
	c.mu.Lock()
	c.registered = registered
	added, removed := c.setSlotsLocked(c.slots)
	c.publishLocked()
	c.mu.Unlock()
	c.probe(added, removed)
	if len(added)+len(removed) > 0 {
		c.log.Info("registered instances changed", "joined", len(added), "left", len(removed))
	}
}
