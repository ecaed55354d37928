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

	mu        sync.Mutex
	want      *desired // the newest table's routing, nil before the first
	confirmed *desired // the last routing HAProxy was seen to show
	status    Status
	stats     map[serverKey]Stat      // the last "show stat", by backend and address
	counts    map[string]route.Counts // accumulated per slot, prod
	seen      map[serverKey]Stat      // the previous reading, for deltas
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

// desired is what HAProxy should show for one table.
type desired struct {
	revision uint64
	maps     [2][]MapEntry
	servers  map[serverKey]string // "ready" or "drain"; slots' servers not here go to maint
	slotOf   map[serverKey]string
	backends []string // every backend vipswap drives, sorted
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
		stats: map[serverKey]Stat{}, counts: map[string]route.Counts{}, seen: map[serverKey]Stat{}}
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
func (d *Driver) Apply(t *route.Table) error {
	w := d.desire(t)
	d.mu.Lock()
	d.want = w
	d.mu.Unlock()
	if routes := t.Routes(); len(routes) > 0 {
		d.warnOnce("routes", "the HAProxy data plane does not carry version routes: they apply to vipswap's own listeners only", "routes", len(routes))
	}
	return d.applyWanted(context.Background(), false)
}

// applyWanted applies the newest wanted routing and reads it back.
func (d *Driver) applyWanted(ctx context.Context, again bool) error {
	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	d.mu.Lock()
	w := d.want
	d.mu.Unlock()
	if w == nil {
		return nil
	}
	start := time.Now()
	err := d.apply(ctx, w)
	if err == nil {
		err = d.confirm(ctx, w)
	}
	took := time.Since(start)
	if err == nil {
		d.readStats(ctx) // in-flight counts from after the change, for a drain's wait
	}
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
	w := &desired{revision: t.Revision, servers: map[serverKey]string{}, slotOf: map[serverKey]string{}}
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

// apply changes what differs: servers added first, then servers made
// ready, then the maps, then servers drained and those of no slot put in
// maintenance: new capacity is up before traffic moves to it, and old
// capacity goes only after.
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
	byKey := map[serverKey]Server{}
	for _, s := range servers {
		byKey[serverKey{s.Backend, s.Addr}] = s
	}
	for _, k := range slices.SortedFunc(maps.Keys(w.servers), compareKeys) {
		if _, ok := byKey[k]; ok {
			continue
		}
		name := "vs_" + strings.NewReplacer(".", "_", ":", "_", "[", "", "]", "").Replace(k.addr)
		cmd := fmt.Sprintf("add server %s/%s %s", k.backend, name, k.addr)
		if d.opts.Check {
			cmd += " check"
		}
		if err := rt.expect(ctx, cmd, "New server registered."); err != nil {
			return err
		}
		if d.opts.Check {
			if err := rt.expect(ctx, fmt.Sprintf("enable health %s/%s", k.backend, name), ""); err != nil {
				return err
			}
		}
		byKey[k] = Server{Backend: k.backend, Name: name, Addr: k.addr, AdminState: adminForcedMaint}
	}
	setState := func(s Server, state string) error {
		return rt.expect(ctx, fmt.Sprintf("set server %s/%s state %s", s.Backend, s.Name, state), "")
	}
	for _, k := range slices.SortedFunc(maps.Keys(w.servers), compareKeys) {
		if s := byKey[k]; w.servers[k] == "ready" && serverState(s) != "ready" {
			if err := setState(s, "ready"); err != nil {
				return err
			}
		}
	}
	for l, want := range w.maps {
		got, err := rt.ShowMap(ctx, d.opts.Maps[l])
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			if err := rt.ReplaceMap(ctx, d.opts.Maps[l], want); err != nil {
				return err
			}
		}
	}
	for _, s := range servers {
		k := serverKey{s.Backend, s.Addr}
		want, ok := w.servers[k]
		switch {
		case ok && want == "drain" && serverState(s) != "drain":
			err = setState(s, "drain")
		case !ok && slices.Contains(w.backends, s.Backend) && serverState(s) != "maint":
			err = setState(s, "maint")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// confirm reads HAProxy back and returns an error naming what differs
// from w.
func (d *Driver) confirm(ctx context.Context, w *desired) error {
	rt := &d.opts.Runtime
	var diffs []string
	for l, want := range w.maps {
		got, err := rt.ShowMap(ctx, d.opts.Maps[l])
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			diffs = append(diffs, fmt.Sprintf("map %s holds %s, want %s", d.opts.Maps[l], describeMap(got), describeMap(want)))
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
			if slices.Contains(w.backends, s.Backend) {
				want = "maint"
			} else {
				continue
			}
		}
		if got := serverState(s); got != want {
			diffs = append(diffs, fmt.Sprintf("server %s/%s (%s) is %s, want %s", s.Backend, s.Name, s.Addr, got, want))
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(w.servers), compareKeys) {
		if !found[k] {
			diffs = append(diffs, fmt.Sprintf("backend %s has no server %s", k.backend, k.addr))
		}
	}
	if len(diffs) > 0 {
		if len(diffs) > 5 {
			diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
		}
		return fmt.Errorf("HAProxy does not show revision %d: %s", w.revision, strings.Join(diffs, "; "))
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
			d.log.Warn("HAProxy no longer shows what vipswap applied (restarted or reloaded?): applying it again", "revision", w.revision, "differs", err)
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
func (d *Driver) readStats(ctx context.Context) {
	stats, err := d.opts.Runtime.ShowStat(ctx)
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
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
		// HAProxy gives an average time, not a histogram: this reading's
		// requests go to the bucket of that average.
		avg := time.Duration(s.TotalTime) * time.Millisecond
		b, _ := slices.BinarySearch(route.LatencyBounds[:], avg.Seconds())
		c.Buckets[b] += n
		c.Sum += time.Duration(n) * avg
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
	var n int64
	for k, s := range d.stats {
		if k.backend == b && (addr == "" || k.addr == addr) {
			n += s.Current
		}
	}
	return n
}

// View says how HAProxy sees one instance: "UP, L7OK, 0 in flight".
func (d *Driver) View(slot, addr string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.stats[serverKey{d.Backend(slot), addr}]
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
func (d *Driver) Probe(_ context.Context, t health.Target) health.Check {
	d.mu.Lock()
	s, ok := d.stats[serverKey{d.Backend(t.Slot), t.Addr}]
	d.mu.Unlock()
	ck := health.Check{Time: time.Now()}
	switch {
	case !ok:
		ck.Code, ck.Detail = health.L4CON, "HAProxy has no server for it yet"
	case strings.HasPrefix(s.Status, "UP") || s.Status == "DRAIN" || s.Status == "no check":
		ck.Code, ck.Detail = health.L7OK, "HAProxy: "+s.Status
	default:
		ck.Code, ck.Detail = health.L7STS, "HAProxy: "+s.Status+" "+s.CheckStatus
		if code := strings.TrimLeft(s.CheckStatus, "* "); strings.HasPrefix(code, "L4") || strings.HasPrefix(code, "L7") {
			ck.Code = strings.Fields(code)[0]
		}
	}
	return ck
}

// Ready reports whether the runtime API answers: the controller asks it
// before committing a change, so a change HAProxy cannot take is refused
// and the state is not changed.
func (d *Driver) Ready(ctx context.Context) error {
	_, err := d.opts.Runtime.Info(ctx)
	return err
}

// Status returns what the driver last did.
func (d *Driver) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}
