// Package azurefd drives Azure Front Door (Standard/Premium) as a data
// plane, as release units are shifted gradually: one origin group holds
// the origins of every slot (release unit), and prod's split becomes the
// origins' weights (1 to 1000: a slot's share in per-mille, split evenly
// over its origins); a slot that takes no traffic has its origins
// disabled, so shift, rollout, promote and abort work as in vipswap's own
// proxy. An origin whose host is one of its slot's instances follows
// that instance: disabled while it is drained or unhealthy.
//
// Front Door's origins carry no ETag: each origin is read just before it
// is written, and one that differs from what vipswap last set is drift,
// reported, not overwritten. A change of several origins is several
// updates (Azure has no transaction over them): origins that gain
// traffic are raised and enabled first, those that lose it lowered and
// disabled after, so no moment has fewer origins taking traffic than
// before or after.
package azurefd

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/cdn/armcdn/v2"

	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// Options configure a Driver.
type Options struct {
	// Conn reaches ARM.
	Conn azure.Conn
	// Profile and OriginGroup name the Front Door profile and the origin
	// group of every slot's origins.
	Profile, OriginGroup string
	// Origins maps each slot to its origins' names.
	Origins map[string][]string
	// Confirm probes the VIP (the Front Door endpoint) after a change.
	Confirm azure.Confirm
	// Leading, if set, says whether this node writes.
	Leading func() bool
	// Logger logs; default slog.Default().
	Logger *slog.Logger
}

// Driver drives one origin group.
type Driver struct {
	o       Options
	origins *armcdn.AFDOriginsClient
	tracker azure.Tracker
	log     *slog.Logger

	last   map[string]origin // what it last set, by origin name
	follow azure.Follow
	retry  azure.Retry
	// ctx ends with Close: the write or confirmation in flight stops.
	ctx    context.Context
	cancel context.CancelFunc
	// unconfirmed names the split (its slots, sorted, joined) whose
	// change the endpoint did not show in time: the next apply of it asks
	// the endpoint again rather than trust the origins' state.
	unconfirmed string
}

// origin is what vipswap reads and writes of an origin.
type origin struct {
	weight  int32
	enabled bool
}

func (o origin) String() string {
	state := "Enabled"
	if !o.enabled {
		state = "Disabled"
	}
	return fmt.Sprintf("weight %d, %s", o.weight, state)
}

// New returns a driver for the origin group o names.
func New(o Options) (*Driver, error) {
	cred, opts, err := o.Conn.Options()
	if err != nil {
		return nil, err
	}
	c, err := armcdn.NewAFDOriginsClient(o.Conn.SubscriptionID, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azure_frontdoor: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	d := &Driver{o: o, origins: c, log: o.Logger}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.tracker.Name = "azure_frontdoor " + o.Profile + "/" + o.OriginGroup
	d.follow.Every, d.follow.Tracker = o.Conn.PollOptions().Frequency, &d.tracker
	d.retry.Every, d.retry.Tracker = o.Conn.RetryEvery, &d.tracker
	return d, nil
}

// Close ends the apply in flight and stops watching for another
// node's change.
func (d *Driver) Close() { d.cancel(); d.follow.Stop(); d.retry.Stop() }

// Describe is a line for the log at start.
func (d *Driver) Describe() string {
	return fmt.Sprintf("front door profile %s, origin group %s (resource group %s)", d.o.Profile, d.o.OriginGroup, d.o.Conn.ResourceGroup)
}

func (d *Driver) resource(name string) string {
	return fmt.Sprintf("front door origin %s/%s/%s", d.o.Profile, d.o.OriginGroup, name)
}

// step is one origin's change.
type step struct {
	name     string
	slot     string
	from, to origin
	gain     bool // it takes more traffic after
}

// want returns, per origin, what prod's split asks of it, and the slots
// that take traffic.
func (d *Driver) want(prodW []route.Weighted) (map[string]origin, []string, error) {
	out := map[string]origin{}
	var slots []string
	share := map[string]uint32{}
	for _, w := range prodW {
		if w.Weight > 0 {
			share[w.Slot] = w.Weight
			slots = append(slots, w.Slot)
		}
	}
	if len(slots) == 0 {
		return nil, nil, fmt.Errorf("azure_frontdoor: prod has no slot; vipswap does not disable every origin")
	}
	for _, s := range slots {
		if len(d.o.Origins[s]) == 0 {
			return nil, nil, fmt.Errorf("azure_frontdoor.origins has no origin for slot %s", s)
		}
	}
	for slot, names := range d.o.Origins {
		w := share[slot]
		// A slot's per-mille, split over its origins: Front Door weighs
		// each origin against the others of the group.
		per := int32(math.Round(float64(w) / float64(len(names))))
		per = max(per, 1)
		for _, n := range names {
			out[n] = origin{weight: per, enabled: w > 0}
		}
	}
	return out, slots, nil
}

// hostOf returns an origin's host name as an instance address would
// show it.
func hostOf(h *string) string {
	if h == nil {
		return ""
	}
	return *h
}

// read GETs every origin of the configured slots.
func (d *Driver) read(ctx context.Context) (map[string]origin, map[string]string, error) {
	cur := map[string]origin{}
	hosts := map[string]string{}
	for _, slot := range sortedSlots(d.o.Origins) {
		for _, n := range d.o.Origins[slot] {
			resp, err := d.origins.Get(ctx, d.o.Conn.ResourceGroup, d.o.Profile, d.o.OriginGroup, n, nil)
			if err != nil {
				return nil, nil, azure.Explain("reading "+d.resource(n), err)
			}
			p := resp.Properties
			if p == nil {
				return nil, nil, fmt.Errorf("%s: Azure's answer has no properties", d.resource(n))
			}
			o := origin{weight: 50, enabled: true} // the API's defaults
			if p.Weight != nil {
				o.weight = *p.Weight
			}
			if p.EnabledState != nil {
				o.enabled = *p.EnabledState == armcdn.EnabledStateEnabled
			}
			cur[n] = o
			hosts[n] = hostOf(p.HostName)
		}
	}
	return cur, hosts, nil
}

func sortedSlots(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// instances returns, for t, whether an origin host is a known instance of
// slot and whether it is routable.
func instances(t *route.Table) func(slot, host string) (bool, bool) {
	members := map[string]map[string]bool{} // slot -> host -> routable
	if t != nil {
		t.Members(func(slot string, i *route.Instance) bool {
			if members[slot] == nil {
				members[slot] = map[string]bool{}
			}
			h := i.Addr
			if hh, _, err := net.SplitHostPort(h); err == nil {
				h = hh
			}
			routable := false
			if s := t.Named(slot); s != nil {
				routable = s.Has(i)
			}
			members[slot][h] = members[slot][h] || routable
			return true
		})
	}
	return func(slot, host string) (bool, bool) {
		ok, known := members[slot][host]
		return known, ok
	}
}

// plan orders the steps from cur to want: gains first.
func (d *Driver) plan(cur, want map[string]origin, hosts map[string]string, routable func(slot, host string) (bool, bool)) []step {
	var steps []step
	for _, slot := range sortedSlots(d.o.Origins) {
		names := d.o.Origins[slot]
		// Instances drained or unhealthy disable their origins, unless
		// that would leave the slot with none while it takes traffic.
		keep := 0
		for _, n := range names {
			if known, ok := routable(slot, hosts[n]); !known || ok {
				keep++
			}
		}
		for _, n := range names {
			w := want[n]
			if known, ok := routable(slot, hosts[n]); known && !ok && keep > 0 {
				w.enabled = false
			}
			want[n] = w
			if c := cur[n]; c != w {
				gain := (w.enabled && !c.enabled) || (w.enabled && w.weight > c.weight)
				steps = append(steps, step{name: n, slot: slot, from: c, to: w, gain: gain})
			}
		}
	}
	slices.SortStableFunc(steps, func(a, b step) int {
		switch {
		case a.gain && !b.gain:
			return -1
		case !a.gain && b.gain:
			return 1
		}
		return 0
	})
	return steps
}

// Apply sets the origins' weights and states to t's prod split, and
// returns once the VIP answers as the split says.
func (d *Driver) Apply(t *route.Table) error { return d.retry.Apply(t, d.apply) }

// apply is Apply's one attempt.
func (d *Driver) apply(t *route.Table) error {
	ctx, cancel := context.WithTimeout(d.ctx, d.o.Conn.OpTimeout())
	defer cancel()
	start := time.Now()
	want, slots, err := d.want(t.Weights(route.Prod))
	if err != nil {
		d.tracker.Failed(t.Revision, err)
		return err
	}
	cur, hosts, err := d.read(ctx)
	if err != nil {
		d.tracker.Failed(t.Revision, err)
		return err
	}
	if d.last != nil {
		for n, c := range cur {
			if l, ok := d.last[n]; ok && l != c {
				err := &azure.DriftError{Resource: d.resource(n), What: fmt.Sprintf("it shows %s; vipswap last set %s", c, l)}
				d.tracker.Failed(t.Revision, err)
				return err
			}
		}
	}
	steps := d.plan(cur, want, hosts, instances(t))
	if len(steps) > 0 && d.o.Leading != nil && !d.o.Leading() {
		d.last = nil
		d.follow.Want(t.Revision, func(ctx context.Context) (bool, error) {
			cur, _, err := d.read(ctx)
			return err == nil && len(d.plan(cur, want, hosts, instances(t))) == 0, err
		})
		return nil
	}
	d.follow.Drop()
	key := strings.Join(slices.Sorted(slices.Values(slots)), ",")
	for _, s := range steps {
		if err := d.update(ctx, s); err != nil {
			// The update may have taken without being seen to finish:
			// once the origins show the split, the endpoint is asked.
			// That origin shows either state: it is not held against
			// the next apply as drift.
			d.unconfirmed = key
			delete(d.last, s.name)
			d.tracker.Failed(t.Revision, err)
			return err
		}
		if d.last == nil {
			d.last = map[string]origin{}
			for n, c := range cur {
				d.last[n] = c
			}
		}
		d.last[s.name] = s.to
	}
	if d.last == nil {
		d.last = want
	}
	took := time.Since(start)
	if len(steps) > 0 || (d.unconfirmed != "" && d.unconfirmed == key) {
		vip, err := d.o.Confirm.WaitSplit(d.ctx, slots)
		if err != nil {
			d.unconfirmed = key
			d.tracker.Failed(t.Revision, err)
			return err
		}
		d.unconfirmed = ""
		took += vip
		d.log.Info("front door origins set and the endpoint answers from the split's slots", "origin_group", d.o.OriginGroup,
			"slots", strings.Join(slots, ","), "revision", t.Revision, "updates", len(steps), "api_seconds", (took - vip).Seconds(), "vip_seconds", vip.Seconds())
	}
	d.tracker.Applied(t.Revision, took)
	return nil
}

// update writes one origin after reading it again: one that changed
// since the apply read it is drift, not overwritten.
func (d *Driver) update(ctx context.Context, s step) error {
	resp, err := d.origins.Get(ctx, d.o.Conn.ResourceGroup, d.o.Profile, d.o.OriginGroup, s.name, nil)
	if err != nil {
		return azure.Explain("reading "+d.resource(s.name), err)
	}
	if p := resp.Properties; p != nil {
		now := origin{weight: 50, enabled: true}
		if p.Weight != nil {
			now.weight = *p.Weight
		}
		if p.EnabledState != nil {
			now.enabled = *p.EnabledState == armcdn.EnabledStateEnabled
		}
		if now == s.to {
			return nil
		}
		if now != s.from {
			return &azure.DriftError{Resource: d.resource(s.name), What: fmt.Sprintf("between vipswap's read and its write: %s, was %s", now, s.from)}
		}
	}
	state := armcdn.EnabledStateDisabled
	if s.to.enabled {
		state = armcdn.EnabledStateEnabled
	}
	w := s.to.weight
	poller, err := d.origins.BeginUpdate(ctx, d.o.Conn.ResourceGroup, d.o.Profile, d.o.OriginGroup, s.name,
		armcdn.AFDOriginUpdateParameters{Properties: &armcdn.AFDOriginUpdatePropertiesParameters{Weight: &w, EnabledState: &state}}, nil)
	if err != nil {
		return azure.Explain("updating "+d.resource(s.name), err)
	}
	if _, err := poller.PollUntilDone(ctx, d.o.Conn.PollOptions()); err != nil {
		return azure.Explain("updating "+d.resource(s.name)+" (polling the operation)", err)
	}
	return nil
}

// Plan returns what a change to the prod split would set, origin by
// origin in the order it would, without writing.
func (d *Driver) Plan(ctx context.Context, prodW, stageW []route.Weighted) ([]string, error) {
	want, _, err := d.want(prodW)
	if err != nil {
		return nil, err
	}
	cur, hosts, err := d.read(ctx)
	if err != nil {
		return nil, err
	}
	var out []azure.Change
	for _, s := range d.plan(cur, want, hosts, instances(nil)) {
		az := fmt.Sprintf("az afd origin update -g %s --profile-name %s --origin-group-name %s --origin-name %s", d.o.Conn.ResourceGroup, d.o.Profile, d.o.OriginGroup, s.name)
		if s.from.weight != s.to.weight {
			az += fmt.Sprintf(" --weight %d", s.to.weight)
		}
		if s.from.enabled != s.to.enabled {
			az += " --enabled-state " + map[bool]string{true: "Enabled", false: "Disabled"}[s.to.enabled]
		}
		out = append(out, azure.Change{Resource: d.resource(s.name) + " (slot " + s.slot + ")", Field: "weight, enabledState", Old: s.from.String(), New: s.to.String(), Az: az})
	}
	return azure.Lines(out), nil
}

// Ready reports whether Front Door answers and has every origin of slots.
func (d *Driver) Ready(ctx context.Context, slots []string) error {
	for _, s := range slots {
		if len(d.o.Origins[s]) == 0 {
			return fmt.Errorf("azure_frontdoor.origins has no origin for slot %s", s)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _, err := d.read(ctx)
	return err
}

// InFlight is 0: Front Door shows no requests in flight through ARM.
func (d *Driver) InFlight(slot, addr string) int64 { return 0 }

// Served is 0, 0: Front Door's counts are Azure Monitor metrics, not
// read here.
func (d *Driver) Served(slot, addr string) (served, errors uint64) { return 0, 0 }

// View says what Front Door's API tells of an instance: nothing per
// instance (its health probes' results are not in ARM).
func (d *Driver) View(slot, addr string) string {
	return "no per-origin health in Azure's API; vipswap's probes decide"
}

// Restarted does nothing: Front Door's probes find a replaced origin.
func (d *Driver) Restarted(ctx context.Context, slot, addr string) error { return nil }

// Converged returns how long revision rev took until the VIP showed it,
// if it is the revision last applied.
func (d *Driver) Converged(rev uint64) (time.Duration, bool) { return d.tracker.Converged(rev) }

// PlaneStatus says what the driver last applied.
func (d *Driver) PlaneStatus() wire.PlaneStatus { return d.tracker.Status() }
