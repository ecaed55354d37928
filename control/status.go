package control

import (
	"slices"
	"time"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// Status returns the routing state with every instance's health, last
// check and counters.
func (c *Controller) Status() wire.Status {
	// Copy what c.mu guards, then ask the checker without it: the checker
	// calls onHealth (which takes c.mu) with a target's lock held.
	c.mu.Lock()
	st, rev := c.st, c.rev
	routes, fromAPI := c.routesLocked(st)
	slots := slices.Clone(c.slots)
	insts := make(map[string][]*route.Instance, len(c.instances))
	healthy := make(map[*route.Instance]bool, len(c.healthy))
	for slot, list := range c.instances {
		insts[slot] = slices.Clone(list)
		for _, i := range list {
			healthy[i] = c.healthy[i]
		}
	}
	c.mu.Unlock()

	s := wire.Status{Revision: uint64(rev), Active: st.Active, Standby: st.Standby, Previous: st.Previous,
		Store: c.StoreStatus(), DrivesRollouts: c.cfg.Leading == nil || c.cfg.Leading()}
	if c.clustered() {
		s.Node = c.cfg.Node // one node's view among several
	}
	for _, r := range c.remotes() {
		s.DataPlanes = append(s.DataPlanes, r.PlaneStatus())
	}
	for i, l := range route.Listeners {
		ls := wire.ListenerStatus{
			Name: l.String(), Addr: c.cfg.Listeners[i], Slot: follows(st, l), Failed: c.failed(l),
			Weights: weights(st, l),
		}
		if c.cfg.Certificates != nil {
			ls.TLS = c.cfg.Certificates(l)
		}
		for _, n := range c.cfg.Counts(l) {
			ls.InstanceErrors += n.InstanceErrors
			ls.ClientErrors += n.ClientErrors
		}
		s.Listeners = append(s.Listeners, ls)
	}
	if c.cfg.AdminCertificates != nil {
		s.AdminTLS = c.cfg.AdminCertificates()
	}
	for i, r := range routes {
		origin := "config"
		if fromAPI[i] {
			origin = "api"
		}
		s.Routes = append(s.Routes, wire.RouteStatus{PathPrefix: r.PathPrefix, Header: r.Header, Value: r.Value, Slot: r.Slot, Origin: origin})
	}
	slices.SortStableFunc(s.Routes, func(a, b wire.RouteStatus) int { // as requests meet them
		if d := len(b.PathPrefix) - len(a.PathPrefix); d != 0 {
			return d
		}
		return len(b.Header) - len(a.Header)
	})
	for _, slot := range slots {
		ss := c.slotStatus(st, slot.Name, insts[slot.Name], healthy)
		ss.Version = slot.Version
		s.Slots = append(s.Slots, ss)
	}
	s.Shadow = c.Shadow()
	return s
}

// follows returns the slot listener l follows in st: stage's, or prod's
// active slot (which, during a shift, shares prod with others).
func follows(st state.State, l route.Listener) string {
	if l == route.Stage {
		return st.Stage()
	}
	return st.Active
}

// weights returns listener l's split in st, in percent, as splits
// decides it.
func weights(st state.State, l route.Listener) map[string]float64 {
	out := map[string]float64{}
	for _, w := range splits(st)[l] {
		out[w.Slot] = float64(w.Weight) / 10
	}
	return out
}

func (c *Controller) slotStatus(st state.State, name string, insts []*route.Instance, healthy map[*route.Instance]bool) wire.SlotStatus {
	ss := wire.SlotStatus{Name: name, Role: "idle"}
	switch name {
	case st.Active:
		ss.Role = "active"
	case st.Standby:
		ss.Role = "standby"
	}
	if t := c.samples.LastActive(name); !t.IsZero() {
		t = t.UTC().Truncate(time.Second)
		ss.LastRequest = &t
	}
	ss.Instances = []wire.InstanceStatus{}
	for _, inst := range insts {
		hs := c.checker.State(health.Target{Slot: name, Addr: inst.Addr})
		is := wire.InstanceStatus{
			Addr:        inst.Addr,
			Healthy:     healthy[inst],
			Drained:     st.IsDrained(name, inst.Addr),
			InFlight:    wire.PerListener{Prod: inst.InFlight(route.Prod), Stage: inst.InFlight(route.Stage)},
			Served:      wire.PerListener{Prod: int64(inst.Served(route.Prod)), Stage: int64(inst.Served(route.Stage))},
			Errors:      wire.PerListener{Prod: int64(inst.Errors(route.Prod)), Stage: int64(inst.Errors(route.Stage))},
			HealthSince: hs.Since.UTC(),
		}
		for _, r := range c.remotes() {
			is.DataPlanes = append(is.DataPlanes, r.PlaneStatus().Name+": "+r.View(name, inst.Addr))
			is.InFlight.Prod += r.InFlight(name, inst.Addr) // its backends serve both listeners
			served, errs := r.Served(name, inst.Addr)
			is.Served.Prod += int64(served)
			is.Errors.Prod += int64(errs)
		}
		if ck := hs.Last; ck.Code != "" {
			is.Check = &wire.Check{
				Code: ck.Code, Status: ck.Status, Detail: ck.Detail, Text: ck.String(),
				Time: ck.Time.UTC(), DurationMS: float64(ck.Took.Microseconds()) / 1000,
			}
		}
		if is.Healthy {
			ss.Healthy++
			if !is.Drained {
				ss.Routable++
			}
		}
		ss.InFlight.Prod += is.InFlight.Prod
		ss.InFlight.Stage += is.InFlight.Stage
		ss.Instances = append(ss.Instances, is)
	}
	return ss
}

// Checks returns how many health checks ended with each code (L7OK,
// L7STS, ...) since the controller started, and their total duration.
func (c *Controller) Checks() (map[string]uint64, time.Duration) { return c.checker.Counts() }
