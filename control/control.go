// Package control is the controller: it turns the stored state and the
// instances' health into routing tables and publishes them to every data
// plane, and it runs the operations that change state (swap, rollback, drain,
// ready), each as one compare-and-swap recorded in the history. It is the
// only writer of the store.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipswap/vipswap/cluster"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/measure"
	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// DataPlane receives routing tables. The built-in proxy and the HAProxy
// driver implement it. Apply is called from one goroutine at a time, in
// revision order.
type DataPlane interface {
	Apply(t *route.Table) error
}

// Config configures a Controller.
type Config struct {
	// Slots are the configuration's slots, in its order. The state may
	// add slots at runtime and remove configured ones.
	Slots []Slot
	// Active seeds the state when the store holds none.
	Active string
	// Store holds the state. The controller does not close it.
	Store store.Store
	// Health configures the probes.
	Health health.Config
	// Planes receive every table.
	Planes []DataPlane
	// Listeners are the front-door addresses, for status.
	Listeners [2]string
	// Certificates, if set, returns what a TLS listener serves now, for
	// status (a reload may change it); none on a cleartext one.
	Certificates func(route.Listener) []wire.CertificateStatus
	// AdminCertificates, if set, returns what the admin API serves over
	// TLS now, for status (nil for cleartext).
	AdminCertificates func() []wire.CertificateStatus
	// Counts, if set, returns what the data plane counted on a listener,
	// per slot, since it started: switches are measured and canaries
	// judged from it.
	Counts func(route.Listener) map[string]route.Counts
	// Failed, if set, returns what the data plane failed on a listener
	// since it started, slots removed since included. Nil sums Counts.
	Failed func(route.Listener) uint64
	// Measure says how much traffic around a switch its measurement
	// covers.
	Measure Measure
	// Analysis is what rollouts judge their canary by. Zero means
	// rollout.DefaultAnalysis.
	Analysis state.Analysis
	// Plans are the named rollout plans.
	Plans map[string]rollout.Plan
	// Launcher, if set, runs the instances of managed slots added at
	// runtime; without it such a slot is refused.
	Launcher Launcher
	// Own, if set, returns which of vipswap's own addresses (a listener,
	// the admin API) addr reaches, or "": AddSlot refuses such an
	// instance, whose requests would come back to vipswap.
	Own func(addr string) string
	// Node names this vipswap in status (cluster mode).
	Node string
	// Leading, if set, says whether this node drives rollouts: in a
	// cluster, the node that holds the etcd lease. Nil: it always does.
	Leading func() bool
	// LocalCopy, if set, keeps the last state this node put in force, to
	// start from when the store is out of reach or holds a state this
	// node cannot apply (cluster mode). Setting it makes the controller
	// one node of a cluster.
	LocalCopy cluster.LocalCopy
	// AllowRun lets AddSlot take a run block: off, a managed slot can
	// only come from the configuration (anyone who may change the state
	// could otherwise run any command as vipswap's user).
	AllowRun bool
	// OnSlots, if set, is called without the controller's locks with the
	// slots that exist, once at start and after every change that added or
	// removed one: what runs managed instances stops those of removed
	// slots.
	OnSlots func(names []string)
	// Routes are the configuration's version routes: matching prod
	// requests go to their slot whatever the weights.
	Routes []route.Route
	// AffinityKey, if set, signs affinity cookies instead of the state's
	// key (affinity.key_file).
	AffinityKey []byte
	// Shadow, if set, mirrors prod's requests for the shadow in the state
	// (the built-in proxy's mirror); without it a shadow is kept and
	// recorded, but nothing copies requests.
	Shadow ShadowPlane
	// Logger receives state changes and plane errors. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Controller owns the routing state. Its methods are safe for concurrent use.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	checker *health.Checker
	refused chan *route.Instance
	// flushKick asks the flusher goroutine for a flush: health
	// transitions hand their tables to the data planes through it, never
	// on the checker's goroutine (a slow load balancer would stall probes).
	flushKick chan struct{}
	wakeup    chan struct{} // wakes the rollout's owner
	samples   *measure.Sampler
	ctx       context.Context // lifetime of the controller's goroutines
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	write sync.Mutex // serializes state writers; held across a store write, when mu is not
	feeds []*feed    // one per data plane, each applying from its own goroutine

	mu         sync.Mutex // guards st, rev, cfg, slots, instances, healthy, published, pending, draining and changes
	st         state.State
	rev        store.Revision
	gen        uint64                       // counts the states put in force, to tell a read that raced a change
	converged  map[uint64]time.Duration     // revision to how long remote planes took to show it
	slots      []Slot                       // membership, in configuration order
	instances  map[string][]*route.Instance // by slot, as slots and registered say
	registered map[string][]string          // by slot: instances that registered themselves
	healthy    map[*route.Instance]bool
	published  bool
	pending    *route.Table     // built, not yet handed to the data planes
	draws      route.Draws      // weighted draws, continued from table to table
	draining   map[uint64]int64 // by history ID: the old slot's in-flight count while a change is measured
	changes    map[ChangeKey]uint64
	// probed holds the instances whose first health check has answered;
	// remoteGate opens once all have (or after a bound): until then no
	// table goes to a remote plane, whose servers would all be drained
	// by a table built before anything was probed.
	probed     map[*route.Instance]bool
	remoteGate bool
	built      uint64 // tables built so far: the pending one's build number

	events *events // what happened, for waiters

	storeErrors atomic.Uint64
	reach       *cluster.Reachability // whether the store answers; its own lock, taken under mu or not

	verdictMu  sync.Mutex        // guards verdict and judgements
	verdict    *rollout.Verdict  // the running rollout's last analysis
	judgements map[string]uint64 // analyses by outcome
}

// ChangeKey names a kind of change and how it ended.
type ChangeKey struct {
	// Operation is swap, rollback, drain or ready.
	Operation string
	// Result is "applied", "refused" (a check or if_revision said no: the
	// operation was aborted) or "failed" (the store could not record it).
	Result string
}

// Changes returns how many changes of each kind ended each way since the
// controller started. Dry runs and changes that changed nothing are not
// counted.
func (c *Controller) Changes() map[ChangeKey]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.changes)
}

// StoreErrors returns how many store operations failed since the
// controller started (conflicts with another writer are not errors).
func (c *Controller) StoreErrors() uint64 { return c.storeErrors.Load() }

// New loads the state from the store (seeding it from cfg.Active when the
// store is empty), publishes a first table and starts health checks. Every
// instance starts unhealthy until its first probe passes.
func New(ctx context.Context, cfg Config) (*Controller, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Counts == nil {
		cfg.Counts = func(route.Listener) map[string]route.Counts { return nil }
	}
	cfg.Measure.setDefaults()
	if cfg.Analysis.IsZero() {
		cfg.Analysis = rollout.DefaultAnalysis
	}
	names := make([]string, len(cfg.Slots))
	for i, s := range cfg.Slots {
		names[i] = s.Name
	}
	st, rev, fromCopy, err := cluster.LoadOrSeed(ctx, cfg.Store, cfg.LocalCopy, cfg.Logger, cfg.Active, names)
	notFit := false
	if err == nil {
		if cerr := st.Check(namesOf(members(st, cfg.Slots, nil))); cerr != nil {
			notFit = true
			err = fmt.Errorf("the stored state at revision %d does not fit the configuration: %w", rev, cerr)
		}
	}
	var refused *wire.NotApplied
	if err != nil && cfg.LocalCopy != nil && !errors.Is(err, store.ErrUnavailable) {
		// A cluster node whose store holds a state it cannot apply (a
		// damaged key, a slot only other nodes have) starts from the last
		// state it had, if that one fits, and refuses changes until the
		// stored state is repaired.
		seen, seenRev, saved, cerr := cfg.LocalCopy.LastSeen()
		if cerr == nil {
			cerr = seen.Check(namesOf(members(seen, cfg.Slots, nil)))
		}
		if cerr != nil {
			return nil, fmt.Errorf("%w; and no usable local copy of the state: %v", err, cerr)
		}
		cfg.Logger.Error("the state store holds a state this node cannot apply: serving the local copy of the last state it had; repair the stored state with vipswap state import",
			"err", err, "revision", seenRev, "saved", saved.Local().Format(time.DateTime))
		refused = &wire.NotApplied{Error: err.Error(), Since: time.Now().UTC()}
		st, rev, fromCopy, err = seen, seenRev, true, nil
	}
	if err != nil {
		if notFit {
			return nil, fmt.Errorf("%w (add the slot back, or remove the state file to start afresh)", err)
		}
		return nil, err
	}
	if err := routesFit(cfg.Routes, namesOf(members(st, cfg.Slots, nil))); err != nil {
		return nil, fmt.Errorf("the configuration does not fit the stored state: %w", err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	c := &Controller{
		ctx:        loopCtx,
		cancel:     cancel,
		cfg:        cfg,
		log:        cfg.Logger,
		refused:    make(chan *route.Instance, 64),
		flushKick:  make(chan struct{}, 1),
		wakeup:     make(chan struct{}, 1),
		st:         st,
		rev:        rev,
		healthy:    make(map[*route.Instance]bool),
		changes:    make(map[ChangeKey]uint64),
		draining:   make(map[uint64]int64),
		judgements: make(map[string]uint64),
		probed:     make(map[*route.Instance]bool),
		events:     newEvents(),
		reach:      cluster.NewReachability(cfg.Logger, fromCopy, refused),
	}
	if cfg.Shadow != nil {
		cfg.Shadow.Set(st.Shadow) // a shadow the stored state holds runs on after a restart
	}
	if !fromCopy && cfg.LocalCopy != nil {
		cfg.LocalCopy.Keep(st, rev)
	}
	for _, p := range cfg.Planes {
		f := newFeed(p)
		c.feeds = append(c.feeds, f)
		c.wg.Go(func() { c.runFeed(f) })
	}
	c.checker = health.New(cfg.Health, c.onHealth)
	c.mu.Lock()
	added, _ := c.setSlotsLocked(members(st, cfg.Slots, c.running))
	c.openGateLocked()
	c.publishLocked()
	c.mu.Unlock()
	c.flush()
	if len(c.remotes()) > 0 {
		c.wg.Go(c.gateTimeout)
	}
	c.log.Info("state loaded", "revision", rev, "active", st.Active, "standby", st.Standby)
	for _, t := range added {
		c.checker.Add(t)
	}
	c.samples = measure.NewSampler(cfg.Counts)
	c.mu.Lock()
	names = namesOf(c.slots)
	c.mu.Unlock()
	c.slotsChanged(nil, names)
	c.wg.Go(c.loop)
	c.wg.Go(c.flusher)
	c.wg.Go(c.runRollouts)
	c.wg.Go(func() { cluster.Follower{Store: cfg.Store, Reach: c.reach, Node: following{c}}.Run(c.ctx) })
	return c, nil
}

// slotsChanged calls OnSlots when the slots that exist are not before.
func (c *Controller) slotsChanged(before, after []string) {
	if c.cfg.OnSlots != nil && (before == nil || !slices.Equal(before, after)) {
		c.cfg.OnSlots(after)
	}
}

// Removed returns the configuration slots the state says were removed at
// runtime.
func (c *Controller) Removed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.st.Removed)
}

// Managed returns the managed slots added at runtime, with their run
// blocks: a restarted vipswap starts them again, a reload keeps them.
func (c *Controller) Managed() map[string]state.RunSpec {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]state.RunSpec{}
	for name, s := range c.st.Slots {
		if s.Run != nil {
			out[name] = *s.Run
		}
	}
	return out
}

// failed returns the requests on l that failed since vipswap started.
func (c *Controller) failed(l route.Listener) uint64 {
	if c.cfg.Failed != nil {
		return c.cfg.Failed(l)
	}
	var n uint64
	for _, counts := range c.cfg.Counts(l) {
		n += counts.Failed
	}
	return n
}

// Close stops health checks, pending measurements and the controller's
// goroutine, and waits for them.
func (c *Controller) Close() {
	// Cancel under mu: startMeasure runs under mu and checks the context,
	// so no goroutine is added once Wait has begun.
	c.mu.Lock()
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
	c.checker.Close()
}

// InstanceRefused reports that inst refused a connection. It never blocks: the
// data plane calls it on the request path.
func (c *Controller) InstanceRefused(inst *route.Instance) {
	select {
	case c.refused <- inst:
	default: // full: the probes will notice soon enough
	}
}

func (c *Controller) loop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	c.samples.Take()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
			c.samples.Take()
		case inst := <-c.refused:
			c.checker.MarkDown(health.Target{Slot: inst.Slot, Addr: inst.Addr}, "refused a request's connection")
		}
	}
}

// onHealth is called by the checker, with the target's lock held, on every
// health transition. The controller never calls the checker with c.mu held
// for a target's state, so the lock order is target, then c.mu. The table
// it builds reaches the data planes from the flusher, not under that lock.
func (c *Controller) onHealth(t health.Target, healthy bool, reason health.Check) {
	defer c.flushSoon()
	c.mu.Lock()
	defer c.mu.Unlock()
	inst := c.instanceLocked(t.Slot, t.Addr)
	if inst == nil {
		return // removed meanwhile
	}
	c.healthy[inst] = healthy
	if !c.remoteGate {
		c.probed[inst] = true
		c.openGateLocked()
	}
	level := slog.LevelInfo
	if !healthy {
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, "instance health changed", "slot", t.Slot, "instance", t.Addr, "healthy", healthy, "check", reason.String())
	c.publishLocked()
	c.events.emit(wire.Event{Kind: wire.EventHealth, Revision: uint64(c.rev), Slot: t.Slot, Instance: t.Addr, Healthy: &healthy})
}

// openGateLocked lets tables go to the remote planes once every instance
// has had its first health check answered. Called with c.mu held.
func (c *Controller) openGateLocked() {
	if c.remoteGate {
		return
	}
	for _, insts := range c.instances {
		for _, i := range insts {
			if !c.probed[i] {
				return
			}
		}
	}
	c.remoteGate = true
	clear(c.probed) // not needed any more
}

// gateTimeout opens the remote planes' gate after the first health round
// at the latest (a probe's interval and timeout), for instances that have
// not answered by then.
func (c *Controller) gateTimeout() {
	wait := c.cfg.Health.Interval + c.cfg.Health.Timeout
	if wait <= 0 {
		wait = 3 * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.ctx.Done():
		return
	case <-t.C:
	}
	c.mu.Lock()
	if c.remoteGate {
		c.mu.Unlock()
		return
	}
	c.remoteGate = true
	c.log.Warn("giving the routing to the remote data plane before every instance's first health check answered", "waited", wait)
	c.publishLocked()
	c.mu.Unlock()
	c.flush()
}

// routableLocked returns slot's instances that may take new requests in
// state st: healthy and not drained.
func (c *Controller) routableLocked(st state.State, slot string) []*route.Instance {
	var out []*route.Instance
	for _, i := range c.instances[slot] {
		if c.healthy[i] && !st.IsDrained(slot, i.Addr) {
			out = append(out, i)
		}
	}
	return out
}

// readinessLocked counts slot's healthy and routable instances in st.
func (c *Controller) readinessLocked(st state.State, slot string) state.Readiness {
	r := state.Readiness{Routable: len(c.routableLocked(st, slot))}
	for _, i := range c.instances[slot] {
		if c.healthy[i] {
			r.Healthy++
		}
	}
	return r
}

// publishLocked builds a table from the current state and health; flush,
// called once c.mu is released, hands it to every data plane.
func (c *Controller) publishLocked() {
	var spec route.Spec
	spec.Revision = uint64(c.rev)
	spec.Listeners = splits(c.st)
	spec.Routable = make(map[string][]*route.Instance, len(c.instances))
	for slot := range c.instances {
		spec.Routable[slot] = c.routableLocked(c.st, slot)
	}
	spec.Members = c.instances
	spec.Routes, _ = c.routesLocked(c.st)
	spec.AffinityKey = c.cfg.AffinityKey
	if len(spec.AffinityKey) == 0 {
		spec.AffinityKey = c.st.AffinityKeyBytes()
	}
	spec.Watch = watchedPaths(c.analysisLocked(c.st), spec.Routes)
	spec.Draws = &c.draws
	c.pending = route.Build(spec)
	c.built++
	c.published = true
}

// splits decides, for every listener, which slots it sends new requests to
// and by what weight: prod by its split, stage to the slot it follows. It
// is the one place that says so; status reports the same in percent.
func splits(st state.State) [len(route.Listeners)][]route.Weighted {
	var out [len(route.Listeners)][]route.Weighted
	for _, sh := range st.Prod() {
		out[route.Prod] = append(out[route.Prod], route.Weighted{Slot: sh.Slot, Weight: uint32(sh.PerMille)})
	}
	out[route.Stage] = []route.Weighted{{Slot: st.Stage(), Weight: 1000}}
	return out
}

// analysisLocked returns the analysis that judges st's canary: the running
// rollout's, else the configuration's.
func (c *Controller) analysisLocked(st state.State) state.Analysis {
	if st.Rollout != nil {
		return st.Rollout.Analysis
	}
	return c.cfg.Analysis
}

// watchedPaths returns the path prefixes whose judged requests the data
// planes count apart: the analysis's, then the routes' (a request a
// header route did not take is judged), at most route.MaxWatchedPaths.
func watchedPaths(a state.Analysis, routes []route.Route) []string {
	var out []string
	for _, p := range a.Paths {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, r := range routes {
		if r.Header != "" && !slices.Contains(out, r.PathPrefix) {
			out = append(out, r.PathPrefix)
		}
	}
	return out[:min(len(out), route.MaxWatchedPaths)]
}

// WaitFirstRound waits, until ctx ends, for every instance's first health
// check to answer (or for the first round's bound, a probe's interval and
// timeout, to pass), then for every data plane to apply the table built
// then: from its return, the planes route by health, not by the
// "unhealthy until probed" a new controller starts with. A vipswap that
// replaces another waits for it before it serves.
func (c *Controller) WaitFirstRound(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		open := c.remoteGate
		c.mu.Unlock()
		if open {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-tick.C:
		}
	}
	c.mu.Lock()
	c.publishLocked() // a table built now, after the round, whatever was pending
	c.mu.Unlock()
	c.flush()
	return ctx.Err()
}

// StoreAnswers tells the controller that its store answers again, after
// an outage it knows of only from failed operations: a vipswap that took
// its state file back after an upgrade that did not take over.
func (c *Controller) StoreAnswers() { c.reach.Answered(nil) }
