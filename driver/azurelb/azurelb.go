// Package azurelb drives an Azure Load Balancer as a data plane, the way
// a VM scale set's VIP swap works without downtime: each slot's instances
// answer a slot-aware health probe (/api/ping?slot=slot0 answers 200 only
// on slot0), the prod rule's probe asks for the active slot and the stage
// rule's probe for the standby, and a swap flips the two probes' request
// paths, with the ActiveSlot tag, in one PUT of the load balancer guarded
// by its ETag. The switch counts once the VIP answers from the new slot.
package azurelb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v6"

	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// Options configure a Driver.
type Options struct {
	// Conn reaches ARM.
	Conn azure.Conn
	// Name is the load balancer's name.
	Name string
	// ProdProbe and StageProbe name the probes of the prod and stage
	// rules ("http-probe", "http-probe-stage").
	ProdProbe, StageProbe string
	// Paths maps each slot to the request path that only its instances
	// answer 200 ("/api/ping?slot=slot0").
	Paths map[string]string
	// Tag is the tag recording the active slot; default "ActiveSlot".
	Tag string
	// TagValues maps a slot to the tag's value ("0"); default the slot's
	// name.
	TagValues map[string]string
	// Confirm probes the VIP after a change.
	Confirm azure.Confirm
	// Leading, if set, says whether this node writes (the cluster's
	// leader); the others only wait to see the change.
	Leading func() bool
	// Logger logs; default slog.Default().
	Logger *slog.Logger
}

// Driver drives one load balancer.
type Driver struct {
	o       Options
	lbs     *armnetwork.LoadBalancersClient
	tracker azure.Tracker
	log     *slog.Logger

	sw     azure.SlotSwitch[view] // what it last applied, and whether the VIP showed it
	follow azure.Follow
	retry  azure.Retry
	// ctx ends with Close: the write or confirmation in flight stops.
	ctx    context.Context
	cancel context.CancelFunc
}

// view is what vipswap reads and writes of the load balancer.
type view struct {
	prod, stage, tag string
}

func (v view) String() string {
	return fmt.Sprintf("probe paths prod %q, stage %q, tag %q", v.prod, v.stage, v.tag)
}

// New returns a driver for the load balancer o names.
func New(o Options) (*Driver, error) {
	cred, opts, err := o.Conn.Options()
	if err != nil {
		return nil, err
	}
	lbs, err := armnetwork.NewLoadBalancersClient(o.Conn.SubscriptionID, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azure_lb: %w", err)
	}
	if o.Tag == "" {
		o.Tag = "ActiveSlot"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	d := &Driver{o: o, lbs: lbs, log: o.Logger}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.tracker.Name = "azure_lb " + o.Name
	d.follow.Every, d.follow.Tracker = o.Conn.PollOptions().Frequency, &d.tracker
	d.retry.Every, d.retry.Tracker = o.Conn.RetryEvery, &d.tracker
	return d, nil
}

// Close ends the apply in flight and stops watching for another
// node's change.
func (d *Driver) Close() { d.cancel(); d.follow.Stop(); d.retry.Stop() }

func (d *Driver) resource() string { return "load balancer " + d.o.Name }

func (d *Driver) tagValue(slot string) string {
	if v, ok := d.o.TagValues[slot]; ok {
		return v
	}
	return slot
}

// want returns what the load balancer should show for prod and stage.
func (d *Driver) want(prodW, stageW []route.Weighted) (view, string, error) {
	prod, err := azure.Whole("azure_lb", prodW)
	if err != nil {
		return view{}, "", err
	}
	stage, err := azure.Whole("azure_lb", stageW)
	if err != nil {
		return view{}, "", err
	}
	if prod == "" {
		return view{}, "", errors.New("azure_lb: prod has no slot; a load balancer's probe cannot point nowhere")
	}
	w := view{tag: d.tagValue(prod)}
	var ok bool
	if w.prod, ok = d.o.Paths[prod]; !ok {
		return view{}, "", fmt.Errorf("azure_lb.paths has no probe path for slot %s", prod)
	}
	if stage == "" {
		stage = prod
	}
	if w.stage, ok = d.o.Paths[stage]; !ok {
		return view{}, "", fmt.Errorf("azure_lb.paths has no probe path for slot %s", stage)
	}
	return w, prod, nil
}

// read GETs the load balancer and what vipswap reads of it.
func (d *Driver) read(ctx context.Context) (armnetwork.LoadBalancer, view, error) {
	resp, err := d.lbs.Get(ctx, d.o.Conn.ResourceGroup, d.o.Name, nil)
	if err != nil {
		return armnetwork.LoadBalancer{}, view{}, azure.Explain("reading "+d.resource(), err)
	}
	lb := resp.LoadBalancer
	var v view
	var found [2]bool
	if lb.Properties != nil {
		for _, p := range lb.Properties.Probes {
			if p == nil || p.Name == nil || p.Properties == nil {
				continue
			}
			path := ""
			if p.Properties.RequestPath != nil {
				path = *p.Properties.RequestPath
			}
			switch *p.Name {
			case d.o.ProdProbe:
				v.prod, found[0] = path, true
			case d.o.StageProbe:
				v.stage, found[1] = path, true
			}
		}
	}
	for i, name := range []string{d.o.ProdProbe, d.o.StageProbe} {
		if !found[i] {
			return lb, v, fmt.Errorf("%s has no probe %s (azure_lb.probes)", d.resource(), name)
		}
	}
	if lb.Etag == nil || *lb.Etag == "" {
		return lb, v, fmt.Errorf("%s: Azure gave no etag; vipswap writes only under If-Match", d.resource())
	}
	if t := lb.Tags[d.o.Tag]; t != nil {
		v.tag = *t
	}
	return lb, v, nil
}

// known reports whether path is a slot's probe path.
func (d *Driver) known(path string) bool {
	for _, p := range d.o.Paths {
		if p == path {
			return true
		}
	}
	return false
}

// set changes lb to show w.
func (d *Driver) set(lb *armnetwork.LoadBalancer, w view) {
	for _, p := range lb.Properties.Probes {
		if p == nil || p.Name == nil || p.Properties == nil {
			continue
		}
		switch *p.Name {
		case d.o.ProdProbe:
			p.Properties.RequestPath = &w.prod
		case d.o.StageProbe:
			p.Properties.RequestPath = &w.stage
		}
	}
	if lb.Tags == nil {
		lb.Tags = map[string]*string{}
	}
	lb.Tags[d.o.Tag] = &w.tag
}

// Apply makes the load balancer send prod to t's active slot and stage to
// its standby, and returns once the VIP answers from the new slot.
func (d *Driver) Apply(t *route.Table) error { return d.retry.Apply(t, d.apply) }

// apply is Apply's one attempt.
func (d *Driver) apply(t *route.Table) error {
	w, prod, err := d.want(t.Weights(route.Prod), t.Weights(route.Stage))
	if err != nil {
		d.tracker.Failed(t.Revision, err)
		return err
	}
	read := func(ctx context.Context) (view, error) {
		_, cur, err := d.read(ctx)
		return cur, err
	}
	return d.sw.Switch(d.ctx, t.Revision, prod, w, d.o.Conn.OpTimeout(), d.write, read, &d.follow, &d.tracker, &d.o.Confirm,
		func(api, vip time.Duration) {
			d.log.Info("load balancer switched and the VIP answers from the new slot", "lb", d.o.Name, "slot", prod, "revision", t.Revision,
				"api_seconds", api.Seconds(), "vip_seconds", vip.Seconds())
		})
}

// write puts w in force with one PUT of the load balancer under If-Match
// (azure.WriteIfMatch: a stale ETag is tried again, anything else that
// changed is drift, reported, and nothing is overwritten).
func (d *Driver) write(ctx context.Context, w view) (bool, error) {
	return azure.WriteIfMatch(ctx, azure.Guard[armnetwork.LoadBalancer, view]{
		Conn: d.o.Conn, Kind: "load balancer", Name: d.o.Name, Log: d.log.With("lb", d.o.Name),
		Read:    d.read,
		ETag:    func(lb armnetwork.LoadBalancer) string { return *lb.Etag },
		Check:   d.check,
		Set:     func(lb *armnetwork.LoadBalancer, w view) error { d.set(lb, w); return nil },
		Leading: d.o.Leading,
		Last:    d.sw.Last,
	}, w, d.lbs.BeginCreateOrUpdate)
}

// check reports drift when the load balancer shows a probe path of no
// slot: nothing vipswap set, nor any slot's, but someone else's probe.
func (d *Driver) check(cur view) error {
	if !d.known(cur.prod) || !d.known(cur.stage) {
		return &azure.DriftError{Resource: d.resource(), What: fmt.Sprintf("it shows %s, a probe path of no slot in azure_lb.paths", cur)}
	}
	return nil
}

// Plan returns what a switch to prod and stage would change, without
// writing: the fields, old and new, and the az commands.
func (d *Driver) Plan(ctx context.Context, prodW, stageW []route.Weighted) ([]string, error) {
	w, _, err := d.want(prodW, stageW)
	if err != nil {
		return nil, err
	}
	_, cur, err := d.read(ctx)
	if err != nil {
		return nil, err
	}
	return azure.Lines(d.changes(cur, w)), nil
}

func (d *Driver) changes(cur, w view) []azure.Change {
	rg, res := d.o.Conn.ResourceGroup, d.resource()
	var out []azure.Change
	probe := func(name, old, next string) {
		if old != next {
			out = append(out, azure.Change{Resource: res, Field: "probes[" + name + "].requestPath", Old: old, New: next,
				Az: fmt.Sprintf("az network lb probe update -g %s --lb-name %s -n %s --set \"requestPath=%s\"", rg, d.o.Name, name, azure.Quote(next))})
		}
	}
	probe(d.o.ProdProbe, cur.prod, w.prod)
	probe(d.o.StageProbe, cur.stage, w.stage)
	if cur.tag != w.tag {
		out = append(out, azure.Change{Resource: res, Field: "tags." + d.o.Tag, Old: cur.tag, New: w.tag,
			Az: fmt.Sprintf("az network lb update -g %s -n %s --set \"tags.%s=%s\"", rg, d.o.Name, d.o.Tag, w.tag)})
	}
	return out
}

// Ready reports whether the load balancer answers and has both probes.
func (d *Driver) Ready(ctx context.Context, slots []string) error {
	for _, s := range slots {
		if _, ok := d.o.Paths[s]; !ok {
			return fmt.Errorf("azure_lb.paths has no probe path for slot %s", s)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _, err := d.read(ctx)
	return err
}

// InFlight is 0: Azure Load Balancer does not count requests in flight
// (it balances connections, and says nothing of them through ARM).
func (d *Driver) InFlight(slot, addr string) int64 { return 0 }

// Served is 0, 0: the load balancer counts nothing per instance that ARM
// shows (Azure Monitor metrics are outside this driver).
func (d *Driver) Served(slot, addr string) (served, errors uint64) { return 0, 0 }

// View says how the load balancer sees an instance: ARM gives no
// per-instance probe status for a load balancer, so vipswap's own probes
// decide.
func (d *Driver) View(slot, addr string) string {
	return "no per-instance probe status in Azure's API; vipswap's probes decide"
}

// Restarted does nothing: the load balancer's probes find a replaced
// instance by themselves.
func (d *Driver) Restarted(ctx context.Context, slot, addr string) error { return nil }

// WholeSlotsOnly names the driver, which switches whole slots only: the
// controller refuses a shift or a rollout before committing it.
func (d *Driver) WholeSlotsOnly() string { return d.tracker.Name }

// Converged returns how long revision rev took until the VIP showed it,
// if it is the revision last applied.
func (d *Driver) Converged(rev uint64) (time.Duration, bool) { return d.tracker.Converged(rev) }

// PlaneStatus says what the driver last applied.
func (d *Driver) PlaneStatus() wire.PlaneStatus { return d.tracker.Status() }

// Describe is a line for the log at start.
func (d *Driver) Describe() string {
	return fmt.Sprintf("load balancer %s (resource group %s), probes %s / %s, tag %s", d.o.Name, d.o.Conn.ResourceGroup, d.o.ProdProbe, d.o.StageProbe, strings.TrimSpace(d.o.Tag))
}
