package control

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// AddSlot adds a slot at runtime: stored in the state (so a restarted
// vipswap serves it too), probed at once, and available to shift,
// rollout, routes and stage once its instances are healthy.
func (c *Controller) AddSlot(ctx context.Context, req wire.AddSlotRequest) (wire.Change, error) {
	what := fmt.Sprintf("slots.%s: added with %d instances", req.Name, len(req.Instances))
	var run *state.RunSpec
	if req.Run != nil {
		r := state.RunSpec(*req.Run)
		run = &r
	}
	if err := ValidVersion(req.Version); err != nil {
		return wire.Change{Operation: "slot add"}, invalid(fmt.Errorf("slot %q: %w", req.Name, err))
	}
	if req.Run != nil {
		if err := validRun(req.Name, req.Instances, *run); err != nil {
			return wire.Change{Operation: "slot add"}, invalid(err)
		}
		c.mu.Lock()
		allowed := c.cfg.AllowRun
		c.mu.Unlock()
		if c.cfg.Launcher == nil || !allowed {
			return wire.Change{Operation: "slot add"}, invalid(fmt.Errorf("slot %q: adding a slot with a run block (a command vipswap starts) is off; set admin.allow_run: true in the configuration to allow it, or give --instances", req.Name))
		}
		what = fmt.Sprintf("slots.%s: added, running %d × %s", req.Name, req.Run.Replicas, strings.Join(req.Run.Command, " "))
	} else if err := ValidSlot(req.Name, req.Instances); err != nil {
		return wire.Change{Operation: "slot add"}, invalid(err)
	}
	for _, a := range req.Instances {
		if c.cfg.Own == nil {
			break
		}
		if which := c.cfg.Own(a); which != "" { // outside the lock: it may look names up
			return wire.Change{Operation: "slot add"}, invalid(fmt.Errorf("slot %q: instance %s is vipswap's own %s: requests sent there would come back to vipswap", req.Name, a, which))
		}
	}
	exists := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.existingLocked(req.Name) != ""
	}
	if req.Run != nil && !req.DryRun && !exists() {
		// Start the instances first: the change then makes them
		// members. If it does not apply, OnSlots below stops them.
		if err := c.cfg.Launcher.Launch(req.Name, *run, req.Version); err != nil {
			return wire.Change{Operation: "slot add"}, invalid(fmt.Errorf("slot %q: %w", req.Name, err))
		}
	}
	res, err := c.change(ctx, operation{name: "slot add", req: req.ChangeRequest, changes: []string{what},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			res.From, res.To = st.Active, req.Name
			if s := c.existingLocked(req.Name); s != "" {
				return st.AddSlot(s, state.SlotSpec{}, true)
			}
			if err := c.sharedLocked(req.Instances); err != nil {
				return st, err
			}
			return st.AddSlot(req.Name, state.SlotSpec{Instances: req.Instances, Run: run, Version: req.Version}, false)
		}})
	if req.Run != nil && !res.Applied && c.cfg.OnSlots != nil {
		c.mu.Lock()
		names := namesOf(c.slots)
		c.mu.Unlock()
		c.cfg.OnSlots(names) // what Launch started for nothing stops
	}
	return res, err
}

// existingLocked returns the slot named name in any case ("" if none).
func (c *Controller) existingLocked(name string) string {
	for _, s := range c.slotNamesLocked() {
		if strings.EqualFold(s, name) {
			return s
		}
	}
	for s := range c.instances {
		if strings.EqualFold(s, name) {
			return s
		}
	}
	return ""
}

// sharedLocked refuses instances another slot has: the same address in
// two slots would share one instance's counters and drain marks.
func (c *Controller) sharedLocked(instances []string) error {
	for slot, is := range c.instances {
		for _, i := range is {
			if slices.ContainsFunc(instances, func(a string) bool { return strings.EqualFold(a, i.Addr) }) {
				return &state.RefusedError{Reason: fmt.Sprintf("slot add refused: instance %s is already in slot %s", i.Addr, slot)}
			}
		}
	}
	return nil
}

// validRun checks a managed slot's run block.
func validRun(name string, instances []string, r state.RunSpec) error {
	switch {
	case !slotName(name):
		return fmt.Errorf("slot name %q: want letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63", name)
	case reserved(name):
		return fmt.Errorf("slot name %q is reserved: metrics label requests that found no slot, or removed slots, with it", name)
	case len(instances) > 0:
		return fmt.Errorf("slot %q: give instances or run, not both", name)
	case len(r.Command) == 0 || r.Command[0] == "":
		return fmt.Errorf("slot %q: run.command must name a program", name)
	case !strings.HasSuffix(r.Address, ":{port}"):
		return fmt.Errorf("slot %q: run.address: want host:{port}, got %q", name, r.Address)
	case r.Replicas < 1 || r.Replicas > 100:
		return fmt.Errorf("slot %q: run.replicas: want 1 to 100, got %d", name, r.Replicas)
	case r.StopTimeout <= 0:
		return fmt.Errorf("slot %q: run.stop_timeout: want a duration above zero", name)
	}
	return nil
}

// RemoveSlot removes a slot: its instances leave the routing table, stop
// being probed, and their connections and counters are released. Refused
// while the slot takes traffic, and (unless force) while a route sends
// requests to it or it has requests in flight.
func (c *Controller) RemoveSlot(ctx context.Context, name string, req wire.ChangeRequest) (wire.Change, error) {
	if err := c.knownSlot(name); err != nil {
		return wire.Change{Operation: "slot remove"}, err
	}
	return c.change(ctx, operation{name: "slot remove", req: req,
		changes: []string{"slots." + name + ": removed"},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			res.From, res.To = name, st.Active
			var inFlight int64
			for _, i := range c.instances[name] {
				inFlight += i.InFlight(route.Prod) + i.InFlight(route.Stage)
			}
			res.InFlight = inFlight
			routes, fromAPI := c.routesLocked(st)
			routed := slices.ContainsFunc(routes, func(r route.Route) bool { return r.Slot == name })
			configured := slices.ContainsFunc(c.cfg.Slots, func(s Slot) bool { return s.Name == name })
			res.Forced = req.Force && (routed || inFlight > 0)
			next, err := st.RemoveSlot(name, configured, routed, inFlight, req.Force)
			if err == nil {
				for i, r := range routes {
					if r.Slot != name {
						continue
					}
					if fromAPI[i] {
						res.Warnings = append(res.Warnings, "route "+r.PathPrefix+"* to "+name+" removed with it")
					} else {
						res.Warnings = append(res.Warnings, "route "+r.PathPrefix+"* in the configuration names "+name+": its requests get 503 until the configuration changes")
					}
				}
			}
			return next, err
		}})
}

// SetStage makes stage follow slot (the slot a swap then makes active).
func (c *Controller) SetStage(ctx context.Context, req wire.StageRequest) (wire.Change, error) {
	if err := c.knownSlot(req.Slot); err != nil {
		return wire.Change{Operation: "stage"}, err
	}
	return c.change(ctx, operation{name: "stage", req: req.ChangeRequest, next: func(st state.State, res *wire.Change) (state.State, error) {
		res.From, res.To = st.Standby, req.Slot
		r := c.readinessLocked(st, req.Slot)
		res.TargetRoutable = r.Routable
		res.Forced = req.Force && r.Routable == 0
		return st.SetStage(req.Slot, r, req.Force)
	}})
}

// ValidSlot checks a slot's name and instance addresses as the
// configuration does.
func ValidSlot(name string, instances []string) error {
	if !slotName(name) {
		return fmt.Errorf("slot name %q: want letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63", name)
	}
	if reserved(name) {
		return fmt.Errorf("slot name %q is reserved: metrics label requests that found no slot, or removed slots, with it", name)
	}
	if len(instances) == 0 {
		return fmt.Errorf("slot %q: want at least one instance (host:port)", name)
	}
	seen := map[string]bool{}
	for _, a := range instances {
		if err := validAddr(a); err != nil {
			return fmt.Errorf("slot %q: instance %q: %v", name, a, err)
		}
		if seen[a] {
			return fmt.Errorf("slot %q: instance %s is listed twice", name, a)
		}
		seen[a] = true
	}
	return nil
}

var slotNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func slotName(name string) bool { return slotNameRE.MatchString(name) }

// validAddr checks a host:port with a port from 1 to 65535.
func validAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return fmt.Errorf("want host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want a port from 1 to 65535")
	}
	return nil
}

// reserved reports whether name is one the counts use for no slot, or for
// slots removed a while ago.
func reserved(name string) bool {
	return strings.EqualFold(name, route.NoSlot) || strings.EqualFold(name, route.RetiredSlots)
}
