// Package azureappgw drives an Azure Application Gateway as a data plane:
// each slot is a backend pool (an environment's internal load balancer or
// scale set), and a swap points the prod request routing rule (and the
// stage one, if any) at the other pool in one PUT of the gateway, guarded
// by its ETag. The instances' health can come from the gateway's own
// backend health. The switch counts once the VIP answers from the new
// slot.
package azureappgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v6"

	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// Options configure a Driver.
type Options struct {
	// Conn reaches ARM.
	Conn azure.Conn
	// Name is the gateway's name.
	Name string
	// ProdRule and StageRule name the request routing rules of prod and
	// stage; StageRule may be empty.
	ProdRule, StageRule string
	// Pools maps each slot to its backend pool's name.
	Pools map[string]string
	// Confirm probes the VIP after a change.
	Confirm azure.Confirm
	// HealthEvery is how often Probe reads the gateway's backend health
	// again (a long-running operation on Azure's side). Default 30s.
	HealthEvery time.Duration
	// Leading, if set, says whether this node writes.
	Leading func() bool
	// Logger logs; default slog.Default().
	Logger *slog.Logger
}

// Driver drives one application gateway.
type Driver struct {
	o       Options
	gws     *armnetwork.ApplicationGatewaysClient
	tracker azure.Tracker
	log     *slog.Logger

	sw     azure.SlotSwitch[view] // what it last applied, and whether the VIP showed it
	follow azure.Follow
	retry  azure.Retry

	// The backend health is a long-running operation on Azure's side
	// (seconds to a minute): it is read in the background, never within
	// a probe's timeout, and probes answer from the newest reading.
	ctx     context.Context // ends with Close: the reading in flight stops
	cancel  context.CancelFunc
	hwg     sync.WaitGroup
	hmu     sync.Mutex    // guards hread, health, healthE, reading
	reading chan struct{} // closed when the reading in flight is done; nil when none
	hread   time.Time
	health  map[string]map[string]string // pool name -> address -> Up/Down/...
	healthE error
}

// view is which pool each rule sends to (pool names).
type view struct{ prod, stage string }

func (v view) String() string {
	return fmt.Sprintf("prod rule -> pool %q, stage rule -> pool %q", v.prod, v.stage)
}

// New returns a driver for the gateway o names.
func New(o Options) (*Driver, error) {
	cred, opts, err := o.Conn.Options()
	if err != nil {
		return nil, err
	}
	gws, err := armnetwork.NewApplicationGatewaysClient(o.Conn.SubscriptionID, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azure_appgw: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HealthEvery == 0 {
		o.HealthEvery = 30 * time.Second
	}
	d := &Driver{o: o, gws: gws, log: o.Logger}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.tracker.Name = "azure_appgw " + o.Name
	d.follow.Every, d.follow.Tracker = o.Conn.PollOptions().Frequency, &d.tracker
	d.retry.Every, d.retry.Tracker = o.Conn.RetryEvery, &d.tracker
	return d, nil
}

// Close stops watching for another node's change.
func (d *Driver) Close() {
	d.cancel() // first: the apply in flight holds what Stop waits for
	d.follow.Stop()
	d.retry.Stop()
	d.cancel()
	d.hwg.Wait()
}

func (d *Driver) resource() string { return "application gateway " + d.o.Name }

// Describe is a line for the log at start.
func (d *Driver) Describe() string {
	return fmt.Sprintf("application gateway %s (resource group %s), rules %s / %s", d.o.Name, d.o.Conn.ResourceGroup, d.o.ProdRule, d.o.StageRule)
}

func (d *Driver) want(prodW, stageW []route.Weighted) (view, string, error) {
	prod, err := azure.Whole("azure_appgw", prodW)
	if err != nil {
		return view{}, "", err
	}
	stage, err := azure.Whole("azure_appgw", stageW)
	if err != nil {
		return view{}, "", err
	}
	if prod == "" {
		return view{}, "", errors.New("azure_appgw: prod has no slot; a routing rule cannot point nowhere")
	}
	if stage == "" {
		stage = prod
	}
	var w view
	var ok bool
	if w.prod, ok = d.o.Pools[prod]; !ok {
		return view{}, "", fmt.Errorf("azure_appgw.pools has no backend pool for slot %s", prod)
	}
	if d.o.StageRule != "" {
		if w.stage, ok = d.o.Pools[stage]; !ok {
			return view{}, "", fmt.Errorf("azure_appgw.pools has no backend pool for slot %s", stage)
		}
	}
	return w, prod, nil
}

// poolName returns the last segment of a pool's ID.
func poolName(id *string) string {
	if id == nil {
		return ""
	}
	return (*id)[strings.LastIndex(*id, "/")+1:]
}

// read GETs the gateway and which pool each rule sends to.
func (d *Driver) read(ctx context.Context) (armnetwork.ApplicationGateway, view, error) {
	resp, err := d.gws.Get(ctx, d.o.Conn.ResourceGroup, d.o.Name, nil)
	if err != nil {
		return armnetwork.ApplicationGateway{}, view{}, azure.Explain("reading "+d.resource(), err)
	}
	gw := resp.ApplicationGateway
	if gw.Properties == nil {
		return gw, view{}, fmt.Errorf("%s: Azure's answer has no properties", d.resource())
	}
	if gw.Etag == nil || *gw.Etag == "" {
		return gw, view{}, fmt.Errorf("%s: Azure gave no etag; vipswap writes only under If-Match", d.resource())
	}
	var v view
	found := map[string]bool{}
	for _, r := range gw.Properties.RequestRoutingRules {
		if r == nil || r.Name == nil || r.Properties == nil {
			continue
		}
		var pool string
		if r.Properties.BackendAddressPool != nil {
			pool = poolName(r.Properties.BackendAddressPool.ID)
		}
		if (*r.Name == d.o.ProdRule || *r.Name == d.o.StageRule) && r.Properties.RuleType != nil &&
			*r.Properties.RuleType != armnetwork.ApplicationGatewayRequestRoutingRuleTypeBasic {
			return gw, view{}, fmt.Errorf("%s: rule %s is %s; vipswap switches the pool of Basic rules only (a path map's pools are not changed)", d.resource(), *r.Name, *r.Properties.RuleType)
		}
		switch *r.Name {
		case d.o.ProdRule:
			v.prod, found[*r.Name] = pool, true
		case d.o.StageRule:
			v.stage, found[*r.Name] = pool, true
		}
	}
	for _, rule := range []string{d.o.ProdRule, d.o.StageRule} {
		if rule != "" && !found[rule] {
			return gw, v, fmt.Errorf("%s has no request routing rule %s (azure_appgw.rules)", d.resource(), rule)
		}
	}
	return gw, v, nil
}

// known reports whether pool is a slot's backend pool.
func (d *Driver) known(pool string) bool {
	for _, p := range d.o.Pools {
		if p == pool {
			return true
		}
	}
	return false
}

// poolID returns the ID of the gateway's pool named name.
func poolID(gw *armnetwork.ApplicationGateway, name string) (string, bool) {
	for _, p := range gw.Properties.BackendAddressPools {
		if p != nil && p.Name != nil && *p.Name == name && p.ID != nil {
			return *p.ID, true
		}
	}
	return "", false
}

// set changes gw's rules to send to w's pools.
func (d *Driver) set(gw *armnetwork.ApplicationGateway, w view) error {
	for _, r := range gw.Properties.RequestRoutingRules {
		if r == nil || r.Name == nil || r.Properties == nil {
			continue
		}
		var pool string
		switch *r.Name {
		case d.o.ProdRule:
			pool = w.prod
		case d.o.StageRule:
			pool = w.stage
		default:
			continue
		}
		id, ok := poolID(gw, pool)
		if !ok {
			return fmt.Errorf("%s has no backend pool %s (azure_appgw.pools)", d.resource(), pool)
		}
		r.Properties.BackendAddressPool = &armnetwork.SubResource{ID: &id}
	}
	return nil
}

// Apply points the rules at t's active (prod) and standby (stage) slots'
// pools, and returns once the VIP answers from the new slot.
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
			d.log.Info("application gateway switched and the VIP answers from the new slot", "gateway", d.o.Name, "slot", prod,
				"revision", t.Revision, "api_seconds", api.Seconds(), "vip_seconds", vip.Seconds())
		})
}

// write puts w in force with one PUT of the gateway under If-Match
// (azure.WriteIfMatch: a stale ETag is tried again, anything else that
// changed is drift, reported, and nothing is overwritten).
func (d *Driver) write(ctx context.Context, w view) (bool, error) {
	return azure.WriteIfMatch(ctx, azure.Guard[armnetwork.ApplicationGateway, view]{
		Conn: d.o.Conn, Kind: "application gateway", Name: d.o.Name, Log: d.log.With("gateway", d.o.Name),
		Read:    d.read,
		ETag:    func(gw armnetwork.ApplicationGateway) string { return *gw.Etag },
		Check:   d.check,
		Set:     d.set,
		Leading: d.o.Leading,
		Last:    d.sw.Last,
	}, w, d.gws.BeginCreateOrUpdate)
}

// check reports drift when a rule sends to a pool of no slot: nothing
// vipswap set, nor any slot's, but someone else's pool.
func (d *Driver) check(cur view) error {
	if !d.known(cur.prod) || (d.o.StageRule != "" && !d.known(cur.stage)) {
		return &azure.DriftError{Resource: d.resource(), What: fmt.Sprintf("it shows %s, a pool of no slot in azure_appgw.pools", cur)}
	}
	return nil
}

// Plan returns what a switch would change, without writing.
func (d *Driver) Plan(ctx context.Context, prodW, stageW []route.Weighted) ([]string, error) {
	w, _, err := d.want(prodW, stageW)
	if err != nil {
		return nil, err
	}
	_, cur, err := d.read(ctx)
	if err != nil {
		return nil, err
	}
	var out []azure.Change
	rule := func(name, old, next string) {
		if name != "" && old != next {
			out = append(out, azure.Change{Resource: d.resource(), Field: "requestRoutingRules[" + name + "].backendAddressPool", Old: old, New: next,
				Az: fmt.Sprintf("az network application-gateway rule update -g %s --gateway-name %s -n %s --address-pool %s", d.o.Conn.ResourceGroup, d.o.Name, name, next)})
		}
	}
	rule(d.o.ProdRule, cur.prod, w.prod)
	rule(d.o.StageRule, cur.stage, w.stage)
	return azure.Lines(out), nil
}

// Ready reports whether the gateway answers and has the rules and every
// pool slots use.
func (d *Driver) Ready(ctx context.Context, slots []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	gw, _, err := d.read(ctx)
	if err != nil {
		return err
	}
	for _, s := range slots {
		pool, ok := d.o.Pools[s]
		if !ok {
			return fmt.Errorf("azure_appgw.pools has no backend pool for slot %s", s)
		}
		if _, ok := poolID(&gw, pool); !ok {
			return fmt.Errorf("%s has no backend pool %s for slot %s", d.resource(), pool, s)
		}
	}
	return nil
}

// BackendHealth reads the gateway's backend health (a long-running
// operation, polled to the end): pool -> server address -> Up, Down,
// Partial, Draining or Unknown.
func (d *Driver) BackendHealth(ctx context.Context) (map[string]map[string]string, error) {
	poller, err := d.gws.BeginBackendHealth(ctx, d.o.Conn.ResourceGroup, d.o.Name, nil)
	if err != nil {
		return nil, azure.Explain("reading "+d.resource()+"'s backend health", err)
	}
	resp, err := poller.PollUntilDone(ctx, d.o.Conn.PollOptions())
	if err != nil {
		return nil, azure.Explain("reading "+d.resource()+"'s backend health (polling the operation)", err)
	}
	out := map[string]map[string]string{}
	for _, p := range resp.BackendAddressPools {
		if p == nil || p.BackendAddressPool == nil {
			continue
		}
		name := poolName(p.BackendAddressPool.ID)
		if name == "" && p.BackendAddressPool.Name != nil {
			name = *p.BackendAddressPool.Name
		}
		servers := map[string]string{}
		for _, hs := range p.BackendHTTPSettingsCollection {
			if hs == nil {
				continue
			}
			for _, s := range hs.Servers {
				if s == nil || s.Address == nil || s.Health == nil {
					continue
				}
				servers[*s.Address] = string(*s.Health)
			}
		}
		out[name] = servers
	}
	return out, nil
}

// healthOf returns what the gateway last said of the instance of slot at
// addr, reading it again when older than HealthEvery.
func (d *Driver) healthOf(ctx context.Context, slot, addr string) (string, error) {
	d.hmu.Lock()
	if time.Since(d.hread) >= d.o.HealthEvery && d.reading == nil && d.ctx.Err() == nil {
		done := make(chan struct{})
		d.reading = done
		d.hwg.Add(1)
		go func() {
			defer d.hwg.Done()
			hctx, cancel := context.WithTimeout(d.ctx, d.o.Conn.OpTimeout())
			h, err := d.BackendHealth(hctx)
			cancel()
			d.hmu.Lock()
			d.health, d.healthE, d.hread, d.reading = h, err, time.Now(), nil
			d.hmu.Unlock()
			close(done)
		}()
	}
	wait := d.reading
	d.hmu.Unlock()
	if wait != nil {
		// Wait for the reading in flight as long as the probe may: the
		// first one has nothing older to answer from.
		select {
		case <-wait:
		case <-ctx.Done():
		}
	}
	d.hmu.Lock()
	defer d.hmu.Unlock()
	if d.health == nil && d.healthE == nil {
		return "", fmt.Errorf("the gateway's backend health is being read (a long-running operation); no reading yet")
	}
	if d.healthE != nil {
		return "", d.healthE
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	servers := d.health[d.o.Pools[slot]]
	if h, ok := servers[addr]; ok {
		return h, nil
	}
	if h, ok := servers[host]; ok {
		return h, nil
	}
	return "", fmt.Errorf("backend pool %s has no server %s in the gateway's backend health", d.o.Pools[slot], host)
}

// Probe is a health.Config.Probe that reports the gateway's backend
// health: an instance is healthy while the gateway says Up.
func (d *Driver) Probe(ctx context.Context, t health.Target) health.Check {
	ck := health.Check{Time: time.Now()}
	h, err := d.healthOf(ctx, t.Slot, t.Addr)
	switch {
	case err != nil:
		ck.Code, ck.Detail = health.L4CON, err.Error()
	case h == "Up":
		ck.Code, ck.Detail = health.L7OK, "application gateway: Up"
	default:
		ck.Code, ck.Detail = health.L7STS, "application gateway: "+h
	}
	ck.Took = time.Since(ck.Time)
	return ck
}

// View says how the gateway last saw an instance.
func (d *Driver) View(slot, addr string) string {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	if d.health == nil {
		return "backend health not read (azure_appgw.health: vipswap)"
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if h, ok := d.health[d.o.Pools[slot]][host]; ok {
		return h
	}
	return "not in the gateway's backend health"
}

// InFlight is 0: ARM does not show a gateway's requests in flight.
func (d *Driver) InFlight(slot, addr string) int64 { return 0 }

// Served is 0, 0: ARM does not count a gateway's requests per server.
func (d *Driver) Served(slot, addr string) (served, errors uint64) { return 0, 0 }

// Restarted forgets the gateway's health, read again at the next probe.
func (d *Driver) Restarted(ctx context.Context, slot, addr string) error {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	d.hread = time.Time{}
	return nil
}

// WholeSlotsOnly names the driver, which switches whole slots only: the
// controller refuses a shift or a rollout before committing it.
func (d *Driver) WholeSlotsOnly() string { return d.tracker.Name }

// Converged returns how long revision rev took until the VIP showed it,
// if it is the revision last applied.
func (d *Driver) Converged(rev uint64) (time.Duration, bool) { return d.tracker.Converged(rev) }

// PlaneStatus says what the driver last applied.
func (d *Driver) PlaneStatus() wire.PlaneStatus { return d.tracker.Status() }
