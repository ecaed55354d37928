// Package haproxy drives a running HAProxy through its runtime API, as a
// data plane: the controller's routing tables become map contents (which
// slot's backend a listener's request goes to, by weight), server states
// (ready, drain, maint) and servers added at runtime; every change is read
// back before it counts as applied, and a loop puts it back when HAProxy
// loses it (a restart or reload).
//
// How a listener's weights become HAProxy's choice: each listener's
// frontend picks its backend with
//
//	use_backend %[rand(10000),map_int(/etc/haproxy/vipswap-prod.map,be_none)]
//
// and the map holds ranges of that random number, one per slot, sized by
// the slot's weight: "0:2999 be_green" and "3000:9999 be_blue" send 30 % to
// green. A whole map is replaced at once (prepare map, add map, commit
// map), so a swap or a shift is one atomic change in HAProxy, as in
// vipswap's own proxy.
package haproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/route"
)

// Buckets is how many values the frontends' rand() draws from: the map's
// ranges split them, so a weight is honoured to 1/Buckets.
const Buckets = 10000

// Options configure a Driver.
type Options struct {
	// Runtime reaches HAProxy's runtime API.
	Runtime Runtime
	// Maps names, per listener, the map file its frontend selects the
	// backend with, as HAProxy knows it (the path in haproxy.cfg).
	Maps [2]string
	// Backends maps a slot to its backend; a slot not listed uses
	// "be_" + its name.
	Backends map[string]string
	// Check adds the servers vipswap creates at runtime with "check" and
	// enables their health checks (HAProxy's health is the one in use).
	Check bool
	// Interval is how often the driver reads HAProxy back (statistics,
	// and whether what it applied is still there). Default 500ms.
	Interval time.Duration
	// ApplyTimeout bounds one whole apply, read-back included: a slow
	// runtime API fails the apply (it is retried every Interval) instead
	// of holding up the change that asked for it. Zero means 5 times
	// Runtime.Timeout.
	ApplyTimeout time.Duration
	// Logger receives re-applies and failures. Nil: slog.Default().
	Logger *slog.Logger
}

// Driver is a data plane on a running HAProxy. Its methods are safe for
// concurrent use.
type Driver struct {
	opts   Options
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	applyMu sync.Mutex // one apply at a time; never held with mu
	statsMu sync.Mutex // one statistics reading at a time, so deltas follow each other; taken before mu

	mu        sync.Mutex
	want      *desired // the newest table's routing, nil before the first
	confirmed *desired // the last routing HAProxy was seen to show
	status    Status
	stats     map[serverKey]Stat        // the last "show stat", by backend and address
	counts    map[string]route.Counts   // accumulated per slot, prod
	served    map[serverKey]route.Tally // accumulated per server: answers, 5xx among them
	seen      map[serverKey]Stat        // the previous reading, for deltas
	baseline  bool                      // a first reading was taken: later ones count from it
	warnedFor string
}

// Status says what the driver last did.
type Status struct {
	// Revision is the state revision of the newest table handed to the
	// driver; Applied says whether HAProxy showed it when last read.
	Revision uint64 `json:"revision"`
	Applied  bool   `json:"applied"`
	// Error is why not, while not applied.
	Error string `json:"error,omitempty"`
	// Converged is how long the last apply took, from the table to HAProxy
	// showing it.
	Converged time.Duration `json:"converged_ns"`
	// Reapplied counts the times HAProxy had lost what was applied (it
	// restarted or reloaded) and the driver put it back.
	Reapplied uint64 `json:"reapplied"`
	// Since is when Applied or Error last changed.
	Since time.Time `json:"since"`
}

type serverKey struct{ backend, addr string }

// desired is what HAProxy should show for one table. Its servers are
// keyed by the address HAProxy shows (an instance given by host name is
// resolved when the table is applied).
type desired struct {
	revision uint64
	maps     [2][]MapEntry
	servers  map[serverKey]string // "ready" or "drain"; slots' servers not here go to maint
	slotOf   map[serverKey]string
	backends []string // every backend vipswap drives, sorted
	// given maps an instance as vipswap knows it (its slot's backend and
	// the address it was given) to the key HAProxy shows, where they
	// differ: an instance given by host name.
	given map[serverKey]serverKey
	// problems are instances that could not be resolved; held are their
	// backends, whose other servers are then not put in maintenance (a
	// replacement was not confirmed).
	problems []string
	held     map[string]bool
}

// New returns a driver and starts its loop; Close stops it.
func New(opts Options) *Driver {
	if opts.Interval <= 0 {
		opts.Interval = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{opts: opts, log: opts.Logger, cancel: cancel, done: make(chan struct{}),
		stats: map[serverKey]Stat{}, counts: map[string]route.Counts{}, seen: map[serverKey]Stat{}, served: map[serverKey]route.Tally{}}
	go d.loop(ctx)
	return d
}

// Close stops the loop. HAProxy keeps what was applied.
func (d *Driver) Close() {
	d.cancel()
	<-d.done
}

// Backend returns the backend of slot.
func (d *Driver) Backend(slot string) string {
	if b, ok := d.opts.Backends[slot]; ok {
		return b
	}
	return "be_" + slot
}

// Apply implements control.DataPlane: it makes HAProxy route as t says and
// returns once HAProxy shows it, or with an error naming what differs.
// An apply that takes longer than Options.ApplyTimeout fails; the loop
// tries again every Interval.
func (d *Driver) Apply(t *route.Table) error {
	w := d.desire(t)
	ctx, cancel := context.WithTimeout(context.Background(), d.applyTimeout())
	d.resolve(ctx, w)
	cancel()
	d.mu.Lock()
	d.want = w
	d.mu.Unlock()
	if routes := t.Routes(); len(routes) > 0 {
		d.warnOnce("routes", "the HAProxy data plane does not carry version routes: they apply to vipswap's own listeners only", "routes", len(routes))
	}
	return d.applyWanted(context.Background(), false)
}

// applyTimeout is how long one whole apply may take.
func (d *Driver) applyTimeout() time.Duration {
	if d.opts.ApplyTimeout > 0 {
		return d.opts.ApplyTimeout
	}
	t := d.opts.Runtime.Timeout
	if t <= 0 {
		t = 2 * time.Second
	}
	return 5 * t
}

// applyWanted applies the newest wanted routing and reads it back.
func (d *Driver) applyWanted(parent context.Context, again bool) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	w := d.want
	d.mu.Unlock()
	if w == nil {
		return nil
	}
	start := time.Now()
	limit := d.applyTimeout()
	ctx, cancel := context.WithTimeout(parent, limit)
	err := d.apply(ctx, w)
	if err == nil {
		err = d.confirm(ctx, w)
	}
	if deadline, _ := ctx.Deadline(); err != nil && !time.Now().Before(deadline) {
		err = fmt.Errorf("the apply did not finish within %s: %w", limit, err)
	}
	cancel()
	took := time.Since(start)
	// In-flight counts from after the change, for a drain's wait (and
	// after a failed one, from what HAProxy does meanwhile).
	d.readStats(parent)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.want != w {
		return err // a newer table came meanwhile: its apply reports
	}
	st := &d.status
	if st.Revision != w.revision || st.Applied != (err == nil) || (err != nil && st.Error != err.Error()) {
		st.Since = time.Now().UTC()
	}
	st.Revision, st.Applied = w.revision, err == nil
	st.Error = ""
	if err != nil {
		st.Error = err.Error()
		return err
	}
	st.Converged = took
	d.confirmed = w
	if again {
		st.Reapplied++
	}
	return nil
}

// desire computes what HAProxy should show for t.
func (d *Driver) desire(t *route.Table) *desired {
	w := &desired{revision: t.Revision, servers: map[serverKey]string{}, slotOf: map[serverKey]string{},
		given: map[serverKey]serverKey{}, held: map[string]bool{}}
	backends := map[string]bool{}
	for l := range w.maps {
		ws := t.Weights(route.Listener(l))
		var total uint64
		for _, x := range ws {
			total += uint64(x.Weight)
		}
		var cum uint64
		from := 0
		for i, x := range ws {
			cum += uint64(x.Weight)
			to := int(cum*Buckets/total) - 1
			if i == len(ws)-1 {
				to = Buckets - 1
			}
			if to < from {
				continue
			}
			w.maps[l] = append(w.maps[l], MapEntry{Key: fmt.Sprintf("%d:%d", from, to), Value: d.Backend(x.Slot)})
			from = to + 1
		}
	}
	t.Members(func(slot string, i *route.Instance) bool {
		k := serverKey{d.Backend(slot), i.Addr}
		backends[k.backend] = true
		w.slotOf[k] = slot
		w.servers[k] = "drain"
		if s := t.Named(slot); s != nil && slices.Contains(s.Instances(), i) {
			w.servers[k] = "ready"
		}
		return true
	})
	for _, m := range w.maps {
		for _, e := range m {
			backends[e.Value] = true
		}
	}
	w.backends = slices.Sorted(maps.Keys(backends))
	return w
}

// resolve rekeys w's servers by the address HAProxy shows: an instance
// given by host name (localhost:9001) is a server at the address the name
// resolves to (IPv4 first), found among the servers by that address and
// added at it when missing, since HAProxy adds a server by name only with
// resolvers and then shows no address for it. An instance whose name does
// not resolve is left out; its backend's other servers are kept as they
// are and the apply reports it.
func (d *Driver) resolve(ctx context.Context, w *desired) {
	for _, k := range slices.SortedFunc(maps.Keys(w.servers), compareKeys) {
		host, port, err := net.SplitHostPort(k.addr)
		if err != nil {
			continue // the controller gives host:port; HAProxy would refuse it and say so
		}
		if _, err := netip.ParseAddr(host); err == nil {
			continue
		}
		addr, err := lookup(ctx, host)
		state, slot := w.servers[k], w.slotOf[k]
		delete(w.servers, k)
		delete(w.slotOf, k)
		if err != nil {
			w.problems = append(w.problems, fmt.Sprintf("instance %s of slot %s: %v (give its IP address)", k.addr, slot, err))
			w.held[k.backend] = true
			continue
		}
		r := serverKey{k.backend, net.JoinHostPort(addr, port)}
		if prev, ok := w.servers[r]; !ok || prev != "ready" {
			w.servers[r] = state
		}
		w.slotOf[r], w.given[k] = slot, r
	}
}

// lookup resolves host to one address, IPv4 first.
func lookup(ctx context.Context, host string) (string, error) {
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", fmt.Errorf("host name %s does not resolve: %w", host, err)
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("host name %s resolves to no address", host)
	}
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		return compareBool(a.Unmap().Is4(), b.Unmap().Is4())
	})
	return addrs[0].Unmap().String(), nil
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// apply changes what differs: servers added first, then their weights
// and ready states, then the maps (all prepared before any is committed),
// then servers drained and those of no slot put in maintenance: new
// capacity is up before traffic moves to it, and old capacity goes only
// after. A server that cannot be added or set does not stop the others;
// its backend's servers are then not put in maintenance, and a map is
// not committed while it would send traffic to a backend none of whose
// servers could be made ready. The error names every such server.
func (d *Driver) apply(ctx context.Context, w *desired) error {
	rt := &d.opts.Runtime
	have, err := d.backends(ctx)
	if err != nil {
		return err
	}
	for _, b := range w.backends {
		if !have[b] {
			return fmt.Errorf("HAProxy has no backend %s (slot %s): add it to haproxy.cfg", b, d.slotOfBackend(w, b))
		}
	}
	servers, err := rt.ShowServers(ctx)
	if err != nil {
		return err
	}
	problems := slices.Clone(w.problems)
	held := maps.Clone(w.held)
	fail := func(backend string, err error) error {
		if errors.As(err, new(*UnreachableError)) || ctx.Err() != nil {
			return err // HAProxy is gone: nothing more will work
		}
		problems = append(problems, err.Error())
		held[backend] = true
		return nil
	}
	byKey := map[serverKey]Server{}
	names := map[string]bool{} // backend/name
	for _, s := range servers {
		byKey[serverKey{s.Backend, s.Addr}] = s
		names[s.Backend+"/"+s.Name] = true
	}
	wanted := slices.SortedFunc(maps.Keys(w.servers), compareKeys)
	for _, k := range wanted {
		if _, ok := byKey[k]; ok {
			continue
		}
		name := "vs_" + strings.NewReplacer(".", "_", ":", "_", "[", "", "]", "").Replace(k.addr)
		for i := 2; names[k.backend+"/"+name]; i++ {
			name = fmt.Sprintf("vs_%s_%d", strings.NewReplacer(".", "_", ":", "_", "[", "", "]", "").Replace(k.addr), i)
		}
		cmd := fmt.Sprintf("add server %s/%s %s", k.backend, name, k.addr)
		if d.opts.Check {
			cmd += " check"
		}
		if err := rt.expect(ctx, cmd, "New server registered."); err != nil {
			if err := fail(k.backend, err); err != nil {
				return err
			}
			continue
		}
		names[k.backend+"/"+name] = true
		s := Server{Backend: k.backend, Name: name, Addr: k.addr, AdminState: adminForcedMaint, Weight: 1, InitWeight: 1}
		byKey[k] = s
		if d.opts.Check {
			if err := rt.expect(ctx, fmt.Sprintf("enable health %s/%s", k.backend, name), ""); err != nil {
				if err := fail(k.backend, err); err != nil {
					return err
				}
			}
		}
	}
	// set sends "set server": false when HAProxy refused it (recorded in
	// problems), an error when HAProxy cannot be reached.
	set := func(s Server, what string) (bool, error) {
		if err := rt.expect(ctx, fmt.Sprintf("set server %s/%s %s", s.Backend, s.Name, what), ""); err != nil {
			return false, fail(s.Backend, err)
		}
		return true, nil
	}
	readyIn := map[string]int{} // backend: servers that take traffic now
	wantReady := map[string]int{}
	for _, k := range wanted {
		if w.servers[k] != "ready" {
			continue
		}
		wantReady[k.backend]++
		s, ok := byKey[k]
		if !ok {
			continue // could not be added
		}
		weighted, ready := true, true
		if s.Weight == 0 {
			// Set to 0 by hand: the server would take no traffic whatever
			// its state. Back to the weight haproxy.cfg gave it.
			if weighted, err = set(s, fmt.Sprintf("weight %d", max(s.InitWeight, 1))); err != nil {
				return err
			}
		}
		if serverState(s) != "ready" {
			if ready, err = set(s, "state ready"); err != nil {
				return err
			}
		}
		if weighted && ready {
			readyIn[k.backend]++
		}
	}
	// Every map is read, then prepared, before any is committed: a map
	// HAProxy does not know, or a refused entry, leaves HAProxy routing
	// as it did.
	type prepared struct{ path, version string }
	var changed []int
	for l, want := range w.maps {
		got, err := rt.ShowMap(ctx, d.opts.Maps[l])
		if err != nil {
			return err
		}
		if slices.Equal(got, want) {
			continue
		}
		for _, e := range want {
			if wantReady[e.Value] > 0 && readyIn[e.Value] == 0 {
				return fmt.Errorf("map %s not changed: it would send traffic to backend %s, none of whose servers could be made ready: %s",
					d.opts.Maps[l], e.Value, strings.Join(problems, "; "))
			}
		}
		changed = append(changed, l)
	}
	var commits []prepared
	for _, l := range changed {
		ver, err := rt.PrepareMap(ctx, d.opts.Maps[l], w.maps[l])
		if err != nil {
			return err
		}
		commits = append(commits, prepared{d.opts.Maps[l], ver})
	}
	for _, c := range commits {
		if err := rt.CommitMap(ctx, c.path, c.version); err != nil {
			return err
		}
	}
	for _, k := range wanted {
		if s, ok := byKey[k]; ok && w.servers[k] == "drain" && serverState(s) != "drain" {
			if _, err := set(s, "state drain"); err != nil {
				return err
			}
		}
	}
	for _, s := range servers {
		k := serverKey{s.Backend, s.Addr}
		if _, ok := w.servers[k]; ok || !slices.Contains(w.backends, s.Backend) || held[s.Backend] || serverState(s) == "maint" {
			continue
		}
		if _, err := set(s, "state maint"); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("HAProxy applied revision %d except: %s", w.revision, strings.Join(problems, "; "))
	}
	return nil
}

// driftError says how HAProxy differs from what was applied.
type driftError struct {
	revision uint64
	diffs    []string
	// maps: a map differs (HAProxy restarted or reloaded, or a map was
	// changed by hand); servers: only servers' states or weights differ.
	maps bool
}

func (e *driftError) Error() string {
	diffs := e.diffs
	if len(diffs) > 5 {
		diffs = append(diffs[:5:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	return fmt.Sprintf("HAProxy does not show revision %d: %s", e.revision, strings.Join(diffs, "; "))
}

// cause guesses why HAProxy lost what it showed, for the log.
func (e *driftError) cause() string {
	if e.maps {
		return "HAProxy restarted or reloaded, or its maps were changed by hand"
	}
	return "a server's state or weight was changed by hand, or HAProxy restarted; vipswap owns the states and weights of its backends' servers"
}

// confirm reads HAProxy back and returns an error naming what differs
// from w.
func (d *Driver) confirm(ctx context.Context, w *desired) error {
	rt := &d.opts.Runtime
	drift := &driftError{revision: w.revision}
	for l, want := range w.maps {
		got, err := rt.ShowMap(ctx, d.opts.Maps[l])
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			drift.maps = true
			drift.diffs = append(drift.diffs, fmt.Sprintf("map %s holds %s, want %s", d.opts.Maps[l], describeMap(got), describeMap(want)))
		}
	}
	servers, err := rt.ShowServers(ctx)
	if err != nil {
		return err
	}
	found := map[serverKey]bool{}
	for _, s := range servers {
		k := serverKey{s.Backend, s.Addr}
		found[k] = true
		want, ok := w.servers[k]
		if !ok {
			if slices.Contains(w.backends, s.Backend) && !w.held[s.Backend] {
				want = "maint"
			} else {
				continue
			}
		}
		if got := serverState(s); got != want {
			drift.diffs = append(drift.diffs, fmt.Sprintf("server %s/%s (%s) is %s, want %s", s.Backend, s.Name, s.Addr, got, want))
		}
		if want == "ready" && s.Weight == 0 {
			drift.diffs = append(drift.diffs, fmt.Sprintf("server %s/%s (%s) has weight 0, want it to take traffic", s.Backend, s.Name, s.Addr))
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(w.servers), compareKeys) {
		if !found[k] {
			drift.diffs = append(drift.diffs, fmt.Sprintf("backend %s has no server %s", k.backend, k.addr))
		}
	}
	drift.diffs = append(drift.diffs, w.problems...)
	if len(drift.diffs) > 0 {
		return drift
	}
	return nil
}

// backends returns the backends HAProxy has.
func (d *Driver) backends(ctx context.Context) (map[string]bool, error) {
	a, err := d.opts.Runtime.Do(ctx, "show backend")
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for line := range strings.Lines(a) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, &AnswerError{Command: "show backend", Answer: a}
		}
		have[line] = true
	}
	return have, nil
}

func (d *Driver) slotOfBackend(w *desired, backend string) string {
	for k, slot := range w.slotOf {
		if k.backend == backend {
			return slot
		}
	}
	for slot, b := range d.opts.Backends {
		if b == backend {
			return slot
		}
	}
	return strings.TrimPrefix(backend, "be_")
}

// serverState reads a server's admin state as vipswap sets it.
func serverState(s Server) string {
	switch {
	case s.AdminState&anyMaint != 0:
		return "maint"
	case s.AdminState&(adminForcedDrain|adminInheritDrn) != 0:
		return "drain"
	}
	return "ready"
}

func compareKeys(a, b serverKey) int {
	if c := strings.Compare(a.backend, b.backend); c != 0 {
		return c
	}
	return strings.Compare(a.addr, b.addr)
}

func describeMap(m []MapEntry) string {
	if len(m) == 0 {
		return "nothing"
	}
	parts := make([]string, len(m))
	for i, e := range m {
		parts[i] = e.Key + " " + e.Value
	}
	return strings.Join(parts, ", ")
}

func (d *Driver) warnOnce(key, msg string, args ...any) {
	d.mu.Lock()
	first := !strings.Contains(d.warnedFor, "|"+key)
	d.warnedFor += "|" + key
	d.mu.Unlock()
	if first {
		d.log.Warn(msg, args...)
	}
}

// loop reads HAProxy every Interval: its statistics, and whether it still
// shows what was applied; if not (HAProxy restarted or reloaded and lost
// the runtime changes), it applies it again.
func (d *Driver) loop(ctx context.Context) {
	defer close(d.done)
	tick := time.NewTicker(d.opts.Interval)
	defer tick.Stop()
	lastErr := "" // logged once until it changes
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.readStats(ctx)
		d.mu.Lock()
		w := d.want
		d.mu.Unlock()
		if w == nil || !d.applyMu.TryLock() {
			continue // nothing applied yet, or an apply is under way
		}
		err := d.confirm(ctx, w)
		d.applyMu.Unlock()
		if err == nil {
			d.setConfirmed(w) // back after a fault, still showing it
			continue
		}
		if ctx.Err() != nil {
			continue
		}
		var unreachable *UnreachableError
		if errors.As(err, &unreachable) {
			d.setError(w, err)
			continue
		}
		d.mu.Lock()
		// HAProxy showed this routing once: it lost it (a restart or a
		// reload), even if it was unreachable for a while in between.
		lost := d.confirmed == w
		d.mu.Unlock()
		if lost {
			cause := "unknown"
			if drift, ok := errors.AsType[*driftError](err); ok {
				cause = drift.cause()
			}
			d.log.Warn("HAProxy no longer shows what vipswap applied: applying it again", "revision", w.revision, "differs", err, "cause", cause)
		}
		switch err := d.applyWanted(ctx, lost); {
		case err != nil && err.Error() != lastErr:
			d.log.Error("applying to HAProxy failed; trying again", "revision", w.revision, "err", err)
			lastErr = err.Error()
		case err == nil && lost:
			d.log.Info("re-applied to HAProxy", "revision", w.revision)
			lastErr = ""
		case err == nil:
			d.log.Info("applied to HAProxy", "revision", w.revision)
			lastErr = ""
		}
	}
}

// setConfirmed records that HAProxy shows w, as read back by the loop.
func (d *Driver) setConfirmed(w *desired) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.want != w || (d.status.Applied && d.confirmed == w) {
		return
	}
	if !d.status.Applied {
		d.status.Since = time.Now().UTC()
		d.log.Info("HAProxy shows what vipswap applied again", "revision", w.revision)
	}
	d.status.Applied, d.status.Error, d.confirmed = true, "", w
}

func (d *Driver) setError(w *desired, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.want != w {
		return
	}
	if d.status.Applied || d.status.Error != err.Error() {
		d.status.Since = time.Now().UTC()
	}
	d.status.Applied, d.status.Error = false, err.Error()
}

// readStats takes HAProxy's per-server statistics: for health, in-flight
// counts and the counts a measurement and a rollout's analysis read.
//
// The first reading only sets the baseline: what HAProxy counted before
// vipswap started is not traffic of this run. A server first seen later
// (added since) counts from zero.
func (d *Driver) readStats(ctx context.Context) {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	stats, err := d.opts.Runtime.ShowStat(ctx)
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	first := !d.baseline
	d.baseline = true
	slotOf := map[string]string{} // backend to slot
	if d.want != nil {
		for k, slot := range d.want.slotOf {
			slotOf[k.backend] = slot
		}
		for slot, b := range d.opts.Backends {
			if _, ok := slotOf[b]; !ok {
				slotOf[b] = slot
			}
		}
	}
	now := map[serverKey]Stat{}
	for _, s := range stats {
		k := serverKey{s.Backend, s.Addr}
		now[k] = s
		slot, ok := slotOf[s.Backend]
		if !ok {
			continue
		}
		prev, seen := d.seen[k]
		if first {
			continue
		}
		c := d.counts[slot]
		var n uint64
		for i := range s.Classes {
			delta := s.Classes[i]
			if seen && s.Classes[i] >= prev.Classes[i] {
				delta -= prev.Classes[i]
			}
			c.Classes[i] += delta
			n += delta
		}
		failed := s.ConnErrors + s.RespErrors
		if seen && failed >= prev.ConnErrors+prev.RespErrors {
			failed -= prev.ConnErrors + prev.RespErrors
		}
		c.Failed += failed
		// HAProxy gives average times, not histograms: this reading's
		// requests go to the bucket of each average. rtime is the
		// server's time to its response head, ttime the whole session's.
		addAvg := func(h *route.Histogram, ms int64) {
			avg := time.Duration(ms) * time.Millisecond
			b, _ := slices.BinarySearch(route.LatencyBounds[:], avg.Seconds())
			h.Buckets[b] += n
			h.Sum += time.Duration(n) * avg
		}
		addAvg(&c.Latency, s.ResponseTime)
		addAvg(&c.Response, s.TotalTime)
		addAvg(&c.Total, s.TotalTime)
		// HAProxy cannot tell a request its weights sent from one a route
		// sent, nor one client from another: all of it is judged.
		errs := s.Classes[5]
		if seen && errs >= prev.Classes[5] {
			errs -= prev.Classes[5]
		}
		c.Judged.Requests += n
		c.Judged.Errors += errs
		c.InstanceErrors += errs
		sv := d.served[k]
		sv.Requests, sv.Errors = sv.Requests+n, sv.Errors+errs
		d.served[k] = sv
		addAvg(&c.Judged.Latency, s.ResponseTime)
		d.counts[slot] = c
	}
	d.stats, d.seen = now, now
}

// Counts returns what HAProxy counted per slot since the driver started,
// as vipswap's proxy reports it; HAProxy's backends serve both listeners,
// so all of it is reported on prod.
func (d *Driver) Counts(l route.Listener) map[string]route.Counts {
	if l != route.Prod {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.counts)
}

// InFlight returns the sessions HAProxy has in flight on the server of
// slot at addr, or on all of slot's servers when addr is "", as last read.
func (d *Driver) InFlight(slot, addr string) int64 {
	b := d.Backend(slot)
	d.mu.Lock()
	defer d.mu.Unlock()
	if addr != "" {
		addr = d.keyLocked(slot, addr).addr
	}
	var n int64
	for k, s := range d.stats {
		if k.backend == b && (addr == "" || k.addr == addr) {
			n += s.Current
		}
	}
	return n
}

// Served returns how many requests HAProxy's server for the instance of
// slot at addr answered since the driver started, and the 5xx among them.
func (d *Driver) Served(slot, addr string) (served, errors uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.served[d.keyLocked(slot, addr)]
	return t.Requests, t.Errors
}

// keyLocked returns the key HAProxy shows the instance of slot at addr
// by: its address, or the one its host name resolved to. Called with
// d.mu held.
func (d *Driver) keyLocked(slot, addr string) serverKey {
	k := serverKey{d.Backend(slot), addr}
	if d.want != nil {
		if r, ok := d.want.given[k]; ok {
			return r
		}
	}
	return k
}

// Restarted forces the server of slot's instance at addr down in HAProxy
// ("set server health down"): its process was replaced, and HAProxy's own
// checks must see the new one pass rise times before it is UP again.
// Otherwise HAProxy, and a health read from HAProxy, would go on trusting
// what the old process answered. The statistics are read again at once.
// A server HAProxy does not check, or does not have yet, is left alone.
func (d *Driver) Restarted(ctx context.Context, slot, addr string) error {
	d.mu.Lock()
	s, ok := d.stats[d.keyLocked(slot, addr)]
	d.mu.Unlock()
	if !ok || s.Status == "no check" {
		return nil
	}
	err := d.opts.Runtime.expect(ctx, "set server "+s.Backend+"/"+s.Name+" health down", "")
	d.readStats(ctx)
	return err
}

// View says how HAProxy sees one instance: "UP, L7OK, 0 in flight".
func (d *Driver) View(slot, addr string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.stats[d.keyLocked(slot, addr)]
	if !ok {
		return "not in HAProxy"
	}
	v := s.Status
	if s.CheckStatus != "" {
		v += ", " + s.CheckStatus
	}
	return fmt.Sprintf("%s, %d in flight", v, s.Current)
}

// Probe is a health.Config.Probe that reports HAProxy's own check
// results: an instance is healthy while HAProxy says it is up (draining
// or not).
//
// A server HAProxy does not check ("no check": no check keyword in
// haproxy.cfg) is not healthy: HAProxy says nothing about it, so the
// health in use has nothing to go by.
func (d *Driver) Probe(ctx context.Context, t health.Target) health.Check {
	d.mu.Lock()
	read := d.baseline
	d.mu.Unlock()
	if !read {
		d.readStats(ctx) // the first probes come before the loop's first reading
	}
	d.mu.Lock()
	k := d.keyLocked(t.Slot, t.Addr)
	s, ok := d.stats[k]
	d.mu.Unlock()
	if host, port, err := net.SplitHostPort(k.addr); !ok && err == nil {
		if _, err := netip.ParseAddr(host); err != nil {
			// Given by host name, before a table resolved it.
			if addr, err := lookup(ctx, host); err == nil {
				d.mu.Lock()
				s, ok = d.stats[serverKey{k.backend, net.JoinHostPort(addr, port)}]
				d.mu.Unlock()
			}
		}
	}
	ck := health.Check{Time: time.Now()}
	switch {
	case !ok:
		ck.Code, ck.Detail = health.L4CON, "HAProxy has no server for it yet"
	case s.Status == "no check":
		ck.Code, ck.Detail = health.L7STS, "HAProxy does not check this server (no check): add check to its server line in haproxy.cfg, or use health: vipswap"
	case strings.HasPrefix(s.Status, "UP") || s.Status == "DRAIN" || s.Status == "DRAIN (agent)":
		// Not "DRAIN 1/3": a server vipswap adds starts drained and one
		// check short of up, before HAProxy has checked it once (its
		// process may not even listen yet); it is healthy once a check
		// passes. A drained server that was up and failed one check
		// looks the same, and is drained anyway.
		ck.Code, ck.Detail = health.L7OK, "HAProxy: "+s.Status
	default:
		ck.Code, ck.Detail = health.L7STS, "HAProxy: "+s.Status+" "+s.CheckStatus
		// The last check's code says why, unless it passed: a server
		// forced down (its process replaced) keeps the old process's L7OK
		// until HAProxy checks again; down is down.
		if code := strings.TrimLeft(s.CheckStatus, "* "); (strings.HasPrefix(code, "L4") || strings.HasPrefix(code, "L7")) && !strings.HasSuffix(strings.Fields(code)[0], "OK") {
			ck.Code = strings.Fields(code)[0]
		}
	}
	return ck
}

// Ready reports whether HAProxy can take a table that uses slots: the
// runtime API answers, HAProxy knows both maps and a backend for each
// slot, and no two slots share a backend. The controller asks it before
// committing a change, so a change HAProxy cannot take is refused and the
// state is not changed; the error names everything missing.
func (d *Driver) Ready(ctx context.Context, slots []string) error {
	rt := &d.opts.Runtime
	if _, err := rt.Info(ctx); err != nil {
		return err
	}
	have, err := d.backends(ctx)
	if err != nil {
		return err
	}
	var missing []string
	for l, m := range d.opts.Maps {
		if _, err := rt.ShowMap(ctx, m); err != nil {
			if errors.As(err, new(*UnreachableError)) {
				return err
			}
			missing = append(missing, fmt.Sprintf("HAProxy has no map %s (haproxy.maps.%s; %v)", m, route.Listener(l), err))
		}
	}
	owner := map[string]string{}
	for _, slot := range slots {
		b := d.Backend(slot)
		if other, ok := owner[b]; ok {
			missing = append(missing, fmt.Sprintf("slots %s and %s would share backend %s (haproxy.backends)", other, slot, b))
			continue
		}
		owner[b] = slot
		if !have[b] {
			missing = append(missing, fmt.Sprintf("HAProxy has no backend %s for slot %s (add it to haproxy.cfg)", b, slot))
		}
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// Status returns what the driver last did.
func (d *Driver) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}
