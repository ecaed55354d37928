package control

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// The primitives a release (package release: vipswap deploy and rolling)
// is made of, beside the changes every operator has (swap, rollout,
// drain, ready, slot add and remove).

// ManagedSlot is a slot whose instances vipswap starts itself.
type ManagedSlot struct {
	// Name is the slot's name.
	Name string
	// Run is how its instances are started; {version} in the command is
	// Version.
	Run state.RunSpec
	// Version is what it runs.
	Version string
	// Configured is true for a slot the configuration declares (it stays
	// when a release is done with it: it is not removed).
	Configured bool
}

// SlotRun returns slot name's run block: the one a deploy or a rolling
// update stored, or the configuration's. A slot vipswap starts no
// instances for is an error that says so.
func (c *Controller) SlotRun(name string) (ManagedSlot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	configured := slices.ContainsFunc(c.cfg.Slots, func(s Slot) bool { return s.Name == name })
	if spec, ok := c.st.Slots[name]; ok {
		if spec.Run == nil {
			return ManagedSlot{}, invalid(fmt.Errorf("slot %q: vipswap starts no instances for it (it has instances: listed, not a run block)", name))
		}
		return ManagedSlot{Name: name, Run: *spec.Run, Version: spec.Version, Configured: configured}, nil
	}
	for _, s := range c.cfg.Slots {
		if s.Name != name || slices.Contains(c.st.Removed, name) {
			continue
		}
		if s.Run == nil {
			return ManagedSlot{}, invalid(fmt.Errorf("slot %q: vipswap starts no instances for it (its instances are listed in the configuration, not a run block)", name))
		}
		return ManagedSlot{Name: name, Run: *s.Run, Version: s.Version, Configured: true}, nil
	}
	return ManagedSlot{}, notFound(fmt.Errorf("no slot %q", name))
}

// Redeploy starts slot name's instances anew as run says, version being
// what they run, and makes them its members in place of the old ones,
// which stop once they have nothing in flight. Refused while the slot
// takes prod traffic. If the change does not apply, the old instances
// stay and the new ones stop.
func (c *Controller) Redeploy(ctx context.Context, name string, run state.RunSpec, version string, req wire.ChangeRequest) (wire.Change, error) {
	if c.cfg.Launcher == nil {
		return wire.Change{Operation: "slot deploy"}, invalid(fmt.Errorf("slot %q: this vipswap starts no instances", name))
	}
	if err := validRun(name, nil, run); err != nil {
		return wire.Change{Operation: "slot deploy"}, invalid(err)
	}
	if err := ValidVersion(version); err != nil {
		return wire.Change{Operation: "slot deploy"}, invalid(err)
	}
	op := operation{name: "slot deploy", req: req, instance: name,
		changes: []string{fmt.Sprintf("slots.%s: version %s, running %d × %s", name, version, run.Replicas, strings.Join(run.Command, " "))},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			return st.Redeploy(name, state.SlotSpec{Run: &run, Version: version}, c.existingLocked(name) != "", false)
		}}
	c.mu.Lock()
	refuse := c.existingLocked(name) == "" || c.st.TakesProd(name)
	c.mu.Unlock()
	if refuse || req.DryRun {
		return c.change(ctx, op) // refused as the state says, and recorded
	}
	finish, err := c.cfg.Launcher.Relaunch(name, run, version)
	if err != nil {
		return wire.Change{Operation: "slot deploy"}, invalid(fmt.Errorf("slot %q: %w", name, err))
	}
	res, err := c.change(ctx, op)
	finish(err == nil && (res.Applied || res.InEffect))
	c.refreshMembers()
	return res, err
}

// Rolled records that a rolling update replaced every instance of slot
// name: from now on (and after a restart) it runs run at version.
func (c *Controller) Rolled(ctx context.Context, name string, run state.RunSpec, version string, req wire.ChangeRequest) (wire.Change, error) {
	return c.change(ctx, operation{name: "slot deploy", req: req, instance: name,
		changes: []string{fmt.Sprintf("slots.%s: version %s, updated in place (rolling)", name, version)},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			return st.Redeploy(name, state.SlotSpec{Run: &run, Version: version}, c.existingLocked(name) != "", true)
		}})
}

// ReplaceInstance stops the instance of slot at addr and starts command
// in its place on the same address, {version} being version. The caller
// drains it first and readies it once healthy.
func (c *Controller) ReplaceInstance(ctx context.Context, slot, addr string, command []string, version string) error {
	if c.cfg.Launcher == nil {
		return invalid(fmt.Errorf("slot %q: this vipswap starts no instances", slot))
	}
	if err := c.cfg.Launcher.Replace(ctx, slot, addr, command, version); err != nil {
		return err
	}
	// What the probes said was about the old process: the new one must
	// pass Rise probes in a row before it counts as healthy, and a load
	// balancer outside must check it anew too (its view may be the health
	// in use).
	var errs []error
	for _, p := range c.cfg.Planes {
		if r, ok := p.(RemotePlane); ok {
			if err := r.Restarted(ctx, slot, addr); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.PlaneStatus().Name, err))
			}
		}
	}
	c.checker.MarkDown(health.Target{Slot: slot, Addr: addr}, "replaced: a new process starts")
	if len(errs) > 0 {
		return fmt.Errorf("instance %s of %s was replaced, but it could not be marked down: %w", addr, slot, errors.Join(errs...))
	}
	return nil
}

// Record adds e to the history as it is (a release's summary: it changed
// no state itself) and returns its ID.
func (c *Controller) Record(ctx context.Context, e store.Entry) (uint64, error) {
	c.mu.Lock()
	c.changes[ChangeKey{e.Operation, e.Result}]++ // vipswap_changes_total{operation="deploy",result="failed"}
	c.mu.Unlock()
	recorded, err := c.cfg.Store.Record(ctx, e)
	if err != nil {
		c.storeErrors.Add(1)
		return 0, err
	}
	return recorded.ID, nil
}

// Served is what prod answered of one slot since vipswap started.
type Served struct {
	// Requests counts answered requests, whatever their status.
	Requests uint64
	// InstanceErrors counts the instances' own 5xx answers.
	InstanceErrors uint64
	// ClientErrors counts vipswap's 4xx answers to clients' mistakes.
	ClientErrors uint64
}

// ProdCounts returns what prod answered since vipswap started, every slot
// together (removed ones too: the totals never go down), and the requests
// that failed.
func (c *Controller) ProdCounts() (Served, uint64) {
	var s Served
	for _, n := range c.cfg.Counts(route.Prod) {
		s.Requests += n.Requests()
		s.InstanceErrors += n.InstanceErrors
		s.ClientErrors += n.ClientErrors
	}
	return s, c.failed(route.Prod)
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

// ValidVersion says what is wrong with a version label given through the
// API, if anything. It becomes {version} in a managed slot's command,
// which may be a shell's: letters, digits and . _ + ~ - only, so that
// whoever may deploy cannot make it run something else.
func ValidVersion(v string) error {
	if v != "" && !versionRE.MatchString(v) {
		return fmt.Errorf("version %q: want letters, digits, '.', '_', '+', '~' or '-', starting with a letter or digit, at most 64 (it becomes {version} in the command)", v)
	}
	return nil
}

// HealthWait is how long a new instance may take to be judged healthy by
// vipswap's probes: Rise passing probes after one interval's wait, each
// up to the probe timeout. Zero when the health in use is another load
// balancer's (its own timing decides).
func (c *Controller) HealthWait() time.Duration {
	h := c.checker.Config()
	if h.Probe != nil {
		return 0
	}
	return time.Duration(h.Rise+1)*h.Interval + h.Timeout
}

// ValidSlotName says what is wrong with a slot name, if anything.
func ValidSlotName(name string) error {
	switch {
	case !slotName(name):
		return fmt.Errorf("slot name %q: want letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63", name)
	case reserved(name):
		return fmt.Errorf("slot name %q is reserved: metrics label requests that found no slot, or removed slots, with it", name)
	}
	return nil
}

// RunOverrides says, for each configured slot whose run block the state
// replaced (a deploy or rolling update stored another), what runs
// instead: the configuration's run block for it is not used until it
// changes through vipswap deploy or rolling again.
func (c *Controller) RunOverrides() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.cfg.Slots {
		if spec, ok := c.st.Slots[s.Name]; ok && spec.Run != nil && s.Run != nil && !(reflect.DeepEqual(*spec.Run, *s.Run) && spec.Version == s.Version) {
			out = append(out, fmt.Sprintf("slots.%s: runs version %s as the last deploy or rolling update stored it (%s), not the configuration's run block", s.Name, spec.Version, strings.Join(spec.Run.Command, " ")))
		}
	}
	return out
}

// refreshMembers makes the running instances the members again, after a
// launcher replaced a slot's: the routing table and probes follow.
func (c *Controller) refreshMembers() {
	c.write.Lock()
	defer c.write.Unlock()
	defer c.flush()
	c.mu.Lock()
	before := namesOf(c.slots)
	added, removed := c.setSlotsLocked(members(c.st, c.cfg.Slots, c.running))
	after := namesOf(c.slots)
	c.publishLocked()
	c.mu.Unlock()
	c.probe(added, removed)
	c.slotsChanged(before, after)
}
