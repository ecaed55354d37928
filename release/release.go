// Package release runs the releases an operator or a CI pipeline asks for
// with one command: a deploy (start a new version in a slot that takes no
// prod traffic, wait until it is healthy, warm it up, gate it on the
// stage listener, switch prod to it by a swap or a rollout, wait for the
// old slot to drain, and keep the old slot for an instant rollback before
// tearing it down) and a rolling update (replace a slot's instances in
// place, a few at a time, each drained first and put back once healthy).
//
// A release runs inside vipswap, beside the controller whose operations
// it is made of: it goes on if the client that asked goes away, and it
// ends in one history entry with its steps, their durations and what prod
// served meanwhile. One release runs at a time.
package release

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
)

// Config is what a Runner needs.
type Config struct {
	// Controller carries out every change.
	Controller *control.Controller
	// AllowRun says whether commands may be run for a release (a deploy's
	// command, its gate commands): the configuration's admin.allow_run.
	AllowRun func() bool
	// Logger reports releases. Nil means slog.Default().
	Logger *slog.Logger
	// Poll is how often a release reads the requests in flight it waits
	// to end (counters, not events) and refreshes its figures. Zero means
	// 100ms.
	Poll time.Duration
}

// keepReleases bounds how many ended releases a Runner remembers.
const keepReleases = 20

// Runner runs releases, one at a time, and remembers the recent ones.
type Runner struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	client *http.Client // warm-ups and HTTP gates

	mu        sync.Mutex
	releases  []*job // oldest first
	running   *job
	seq       int
	teardowns map[string]context.CancelFunc // pending removals of kept slots, by slot
}

// teardown registers the pending teardown of slot, cancelling an earlier
// one, and returns the context that cancels it.
func (r *Runner) teardown(slot string) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cancel := r.teardowns[slot]; cancel != nil {
		cancel()
	}
	ctx, cancel := context.WithCancel(r.ctx)
	if r.teardowns == nil {
		r.teardowns = map[string]context.CancelFunc{}
	}
	r.teardowns[slot] = cancel
	return ctx
}

// cancelTeardown cancels the pending teardown of slot, if any.
func (r *Runner) cancelTeardown(slot string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cancel := r.teardowns[slot]; cancel != nil {
		cancel()
		delete(r.teardowns, slot)
	}
}

// idle waits until no release runs, or ctx ends.
func (r *Runner) idle(ctx context.Context) error {
	for {
		r.mu.Lock()
		running := r.running
		r.mu.Unlock()
		if running == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-running.ended:
		}
	}
}

// New returns a Runner; Close stops what it runs.
func New(cfg Config) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 100 * time.Millisecond
	}
	if cfg.AllowRun == nil {
		cfg.AllowRun = func() bool { return false }
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{cfg: cfg, ctx: ctx, cancel: cancel,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16, Proxy: nil}}}
}

// Close cancels the running release (it fails, saying vipswap stopped)
// and pending teardowns, and waits for them.
func (r *Runner) Close() {
	r.cancel()
	r.wg.Wait()
	r.client.CloseIdleConnections()
}

// Get returns release id's progress.
func (r *Runner) Get(id string) (wire.Progress, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.releases {
		if j.id == id {
			return j.progress(), true
		}
	}
	return wire.Progress{}, false
}

// List returns the releases remembered, newest first.
func (r *Runner) List() []wire.Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]wire.Progress, 0, len(r.releases))
	for i := len(r.releases) - 1; i >= 0; i-- {
		out = append(out, r.releases[i].progress())
	}
	return out
}

// start registers a release of kind for slot and runs body in the
// background; it refuses when another release runs.
func (r *Runner) start(kind, slot, version string, req wire.ChangeRequest, body func(j *job) error) (wire.Progress, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return wire.Progress{}, &control.Error{Kind: control.Unavailable, Err: errors.New("vipswap is stopping")}
	}
	if j := r.running; j != nil {
		return wire.Progress{}, &control.Error{Kind: control.Conflict, Err: fmt.Errorf("%s refused: %s %s of slot %s is running (GET /v1/releases/%s follows it)", kind, j.kind, j.id, j.slot, j.id)}
	}
	r.seq++
	j := &job{r: r, req: req, ended: make(chan struct{}), kind: kind, slot: slot, p: wire.Progress{ID: time.Now().UTC().Format("20060102-150405") + "-" + strconv.Itoa(r.seq), Kind: kind, Slot: slot, Version: version,
		State: "running", Started: time.Now().UTC()}}
	j.id = j.p.ID
	j.meter.sample(r.cfg.Controller)
	r.running = j
	r.releases = append(r.releases, j)
	if len(r.releases) > keepReleases {
		r.releases = r.releases[1:]
	}
	sampled := make(chan struct{})
	r.wg.Go(func() { // progress shows the figures as the release runs
		tick := time.NewTicker(r.cfg.Poll)
		defer tick.Stop()
		for {
			select {
			case <-sampled:
				return
			case <-tick.C:
				j.meter.sample(r.cfg.Controller)
			}
		}
	})
	r.wg.Go(func() {
		err := body(j)
		close(sampled)
		j.end(err)
		r.mu.Lock()
		r.running = nil
		r.mu.Unlock()
		close(j.ended)
	})
	return j.progress(), nil
}

// meter counts what prod served while a release runs: the data plane's
// totals now less those at the start (they never go down, a slot the
// release removes included).
type meter struct {
	mu      sync.Mutex
	started bool
	base    control.Served
	failed0 uint64
	counted counted
}

// counted is what a meter counted: Progress's figures.
type counted struct {
	requests, failed, instanceErrors, clientErrors uint64
}

// sample takes the controller's counts now.
func (m *meter) sample(c *control.Controller) counted {
	return m.add(c.ProdCounts())
}

// read returns what the meter has counted so far.
func (m *meter) read() counted {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counted
}

// add takes the totals since vipswap started; the first call is the
// baseline.
func (m *meter) add(now control.Served, failed uint64) counted {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		m.started, m.base, m.failed0 = true, now, failed
		return counted{}
	}
	since := func(n, base uint64) uint64 {
		if n < base {
			return 0
		}
		return n - base
	}
	m.counted = counted{since(now.Requests, m.base.Requests), since(failed, m.failed0),
		since(now.InstanceErrors, m.base.InstanceErrors), since(now.ClientErrors, m.base.ClientErrors)}
	return m.counted
}

// set fills p's figures from c.
func (c counted) set(p *wire.Progress) {
	p.Requests, p.Failed, p.InstanceErrors, p.ClientErrors = c.requests, c.failed, c.instanceErrors, c.clientErrors
}

// job is one release as it runs.
type job struct {
	r              *Runner
	req            wire.ChangeRequest
	meter          meter
	id, kind, slot string        // as in p, never changed: read without mu
	ended          chan struct{} // closed once the release ended and is no longer the running one

	mu    sync.Mutex // guards p, steps
	p     wire.Progress
	steps []store.Step
}

func (j *job) progress() wire.Progress {
	j.mu.Lock()
	defer j.mu.Unlock()
	p := j.p
	p.Steps = make([]wire.Step, len(j.steps))
	for i, s := range j.steps {
		d := s.Duration
		if s.Result == "running" {
			d = time.Since(s.Start)
		}
		p.Steps[i] = wire.Step{Name: s.Name, Start: s.Start, Seconds: d.Seconds(), Result: s.Result, Detail: s.Detail}
	}
	if p.State == "running" {
		j.meter.read().set(&p) // sampled every Poll while it runs
	}
	return p
}

// stepError is a step's failure: the release stops, naming the step.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// step runs one step: its detail is what fn returns (or its error).
func (j *job) step(name string, fn func() (string, error)) error {
	j.mu.Lock()
	j.steps = append(j.steps, store.Step{Name: name, Start: time.Now().UTC(), Result: "running"})
	i := len(j.steps) - 1
	j.mu.Unlock()
	detail, err := fn()
	j.mu.Lock()
	defer j.mu.Unlock()
	s := &j.steps[i]
	s.Duration, s.Result, s.Detail = time.Since(s.Start), "ok", detail
	j.p.Healthy, j.p.Instances = 0, 0
	if err != nil {
		if j.r.ctx.Err() != nil {
			err = fmt.Errorf("vipswap stopped during the release: %w", err)
		}
		s.Result, s.Detail = "failed", err.Error()
		return &stepError{step: name, err: err}
	}
	j.r.cfg.Logger.Info("release step done", "release", j.id, "step", name, "took", s.Duration.Round(time.Millisecond), "detail", detail)
	return nil
}

// health shows the counts the running step waits for.
func (j *job) health(healthy, of int) {
	j.mu.Lock()
	j.p.Healthy, j.p.Instances = healthy, of
	j.mu.Unlock()
}

// end records the release's outcome in the history, then shows it: a
// follower that sees the release ended sees its history entry too.
func (j *job) end(err error) {
	c := j.meter.sample(j.r.cfg.Controller)
	now := time.Now().UTC()
	j.mu.Lock()
	p := j.p
	c.set(&p)
	p.Ended, p.State = now, "succeeded"
	entry := store.Entry{Time: now, Actor: j.req.Actor, Operation: p.Kind, From: p.From, To: p.Slot, Reason: j.req.Reason,
		Result: store.Applied, Steps: append([]store.Step(nil), j.steps...),
		Changes: []string{fmt.Sprintf("slots.%s: version %s", p.Slot, p.Version)},
		Measurement: &store.Measurement{Served: c.requests, Failed: c.failed, InstanceErrors: c.instanceErrors, ClientErrors: c.clientErrors,
			Start: p.Started, End: now, Complete: true}}
	j.mu.Unlock()
	if entry.Actor == "" {
		entry.Actor = "local"
	}
	var se *stepError
	if err != nil {
		p.State, p.Error = "failed", err.Error()
		if errors.As(err, &se) {
			p.FailedStep, p.Error = se.step, se.err.Error()
		}
		entry.Result, entry.Error = store.Failed, err.Error()
	}
	// The history entry is written even when vipswap is stopping.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hid, rerr := j.r.cfg.Controller.Record(ctx, entry)
	if rerr != nil {
		j.r.cfg.Logger.Error("could not record a release in the history", "release", p.ID, "err", rerr)
	}
	j.mu.Lock()
	p.HistoryID, p.KeepUntil, p.Kept = hid, j.p.KeepUntil, j.p.Kept
	j.p = p
	j.mu.Unlock()
	if err != nil {
		j.r.cfg.Logger.Warn("release failed", "release", p.ID, "err", err)
	} else {
		j.r.cfg.Logger.Info("release succeeded", "release", p.ID)
	}
}

// waitFor waits until cond returns true or an error, or limit passes; what
// is the thing waited for, in the timeout's message. cond is called at
// once and then each time the controller says something happened (a
// health transition, a change, a verdict, a rollout's end), never on a
// timer: what it looks at changes only with an event.
func (j *job) waitFor(limit time.Duration, what string, cond func() (bool, error)) error {
	ctrl := j.r.cfg.Controller
	seq := ctrl.LastEvent()
	return j.wait(limit, what, cond, func() <-chan struct{} {
		evs, next := ctrl.Events(seq)
		seq = evs.Next
		if len(evs.Events) > 0 || evs.Missed {
			return closed // something happened since the last look
		}
		return next
	}, nil)
}

// waitForCounts is waitFor for a cond over requests in flight, which are
// counters and not events: it looks every Poll.
func (j *job) waitForCounts(limit time.Duration, what string, cond func() (bool, error)) error {
	tick := time.NewTicker(j.r.cfg.Poll)
	defer tick.Stop()
	return j.wait(limit, what, cond, func() <-chan struct{} { return nil }, tick.C)
}

// closed is a channel that is closed.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wait calls cond, then again each time the channel next returns is
// closed (taken before each look, so nothing between is missed) or tick
// ticks, until cond returns true or an error, or limit passes.
func (j *job) wait(limit time.Duration, what string, cond func() (bool, error), next func() <-chan struct{}, tick <-chan time.Time) error {
	ctx, cancel := context.WithTimeout(j.r.ctx, limit)
	defer cancel()
	for {
		woke := next()
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			if j.r.ctx.Err() != nil {
				return j.r.ctx.Err()
			}
			return fmt.Errorf("%s: not within %s", what, limit)
		case <-woke:
		case <-tick:
		}
	}
}

// planesShow reports whether every load balancer vipswap drives (st's
// data planes) shows revision rev or a newer one, and if not, which does
// not and why: an instance is stopped only once nothing routes to it.
func planesShow(st wire.Status, rev uint64) (bool, string) {
	for _, p := range st.DataPlanes {
		if p.Revision < rev || !p.Applied {
			why := fmt.Sprintf("%s does not show revision %d yet", p.Name, rev)
			if p.Error != "" {
				why += ": " + p.Error
			}
			return false, why
		}
	}
	return true, ""
}

// waitDrained waits until every driven load balancer shows revision rev
// and quiet holds on the status (no request in flight where it matters),
// up to limit; a load balancer that never showed rev is named in the
// error.
func (j *job) waitDrained(limit time.Duration, what string, rev uint64, quiet func(wire.Status) bool) error {
	ctrl := j.r.cfg.Controller
	var lagging string
	err := j.waitForCounts(limit, what, func() (bool, error) {
		st := ctrl.Status()
		var shown bool
		if shown, lagging = planesShow(st, rev); !shown {
			return false, nil // a load balancer still sends it requests
		}
		return quiet(st), nil
	})
	if err != nil && lagging != "" {
		err = fmt.Errorf("%w: %s", err, lagging)
	}
	return err
}

// slotOf returns slot name in st.
func slotOf(st wire.Status, name string) (wire.SlotStatus, bool) {
	for _, s := range st.Slots {
		if s.Name == name {
			return s, true
		}
	}
	return wire.SlotStatus{}, false
}

// instanceOf returns instance addr of slot name in st.
func instanceOf(st wire.Status, slot, addr string) (wire.InstanceStatus, bool) {
	s, _ := slotOf(st, slot)
	for _, i := range s.Instances {
		if i.Addr == addr {
			return i, true
		}
	}
	return wire.InstanceStatus{}, false
}

// freshlyHealthy reports whether i became healthy after since: it was
// unhealthy then (new, or marked down when its process was replaced) and
// has passed Rise probes in a row since.
func freshlyHealthy(i wire.InstanceStatus, since time.Time) bool {
	return i.Healthy && i.HealthSince.After(since)
}

// lastCheck describes i's last health check, for an error.
func lastCheck(i wire.InstanceStatus) string {
	if i.Check == nil {
		return "not probed yet"
	}
	return "last check " + i.Check.Text
}

// warmup sends n GET requests to path on each instance and says how they
// went. A warm-up does not fail a release: it primes caches and pools.
func (j *job) warmup(addrs []string, n int, path string) string {
	var ok, bad int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			for range n {
				if j.r.ctx.Err() != nil {
					return
				}
				good := j.get("http://" + a + path)
				mu.Lock()
				if good == nil {
					ok++
				} else {
					bad++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return fmt.Sprintf("%d requests to %s on %d instances: %d answered 2xx, %d did not", ok+bad, path, len(addrs), ok, bad)
}

// get sends one GET and wants a 2xx answer.
func (j *job) get(url string) error {
	req, err := http.NewRequestWithContext(j.r.ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := j.r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var buf [512]byte
	for {
		if _, err := resp.Body.Read(buf[:]); err != nil {
			break
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s answered %s", url, resp.Status)
	}
	return nil
}

// loopback returns addr with an unspecified host (0.0.0.0, ::) made the
// loopback address, so that vipswap can reach its own listener.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// parseDuration reads a request's duration field; empty means def.
func parseDuration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, &control.Error{Kind: control.Invalid, Err: fmt.Errorf("%s: want a duration such as 30s or 10m, got %q", field, s)}
	}
	return d, nil
}
