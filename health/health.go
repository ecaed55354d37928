// Package health decides whether instances are healthy: active HTTP probes
// with rise and fall thresholds, and passive marks from the data plane when an
// instance refuses a connection. It keeps each instance's last check (in
// HAProxy's terms: L7OK, L7STS 404, L4CON, ...) and reports each transition,
// with the check that caused it, to a callback; it knows nothing of routing
// tables or the store.
//
// A probe that vipswap could not make for want of its own resources
// (SOCKERR: out of descriptors) neither passes nor fails: an overloaded
// vipswap never marks healthy instances down.
package health

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"sync"
	"time"
)

// Target is what one probe checks: an instance as a member of a slot. Health
// is kept per (slot, address) because the probe path names the slot.
type Target struct {
	// Slot is the instance's slot.
	Slot string
	// Addr is the instance's host:port.
	Addr string
}

// Config configures a Checker.
type Config struct {
	// Path is the probe path and query; {slot} is replaced by the target's
	// slot, query-escaped.
	Path string
	// Interval is the time between two probes of one target.
	Interval time.Duration
	// Timeout bounds one probe, connecting included.
	Timeout time.Duration
	// Rise is how many consecutive passes make a target healthy.
	Rise int
	// Fall is how many consecutive failures make it unhealthy.
	Fall int
	// Type is TypeHTTP (a GET of Path; empty means it) or TypeGRPC (the
	// grpc.health.v1 check of the slot's service).
	Type string
	// Transports says, by slot, how its instances are reached (protocol,
	// TLS); a slot missing here is reached over HTTP/1.1 in cleartext.
	Transports map[string]Transport
	// Probe, if set, checks a target instead of an HTTP GET of Path: a
	// data plane that checks instances itself (HAProxy) reports its view
	// through it. Rise and Fall apply to its answers as to probes.
	Probe func(ctx context.Context, t Target) Check
	// ProxyProtocol, by slot name, is the PROXY protocol version (1 or
	// 2) the slot's instances expect at the start of each connection:
	// probes begin with a header that names no client.
	ProxyProtocol map[string]int
	// Logger receives probes that could not be made (at most one line a
	// second). Nil means slog.Default().
	Logger *slog.Logger
}

// State is one target's health as the checker sees it.
type State struct {
	// Healthy is the verdict.
	Healthy bool
	// Since is when the verdict last changed (when probing began, if it
	// never did).
	Since time.Time
	// Last is the last check, passive marks included.
	Last Check
}

// Checker probes targets and reports health transitions. Its methods are safe
// for concurrent use.
type Checker struct {
	cfg      Config
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	onChange func(Target, bool, Check)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards targets, counts and lastSkip
	targets map[Target]*target
	counts  map[string]uint64 // checks by code
	took    time.Duration     // total time of the checks counted
	skipLog time.Time         // when a SOCKERR was last logged
}

// target is one target's probe state.
type target struct {
	stop    context.CancelFunc // ends its probe loop
	mu      sync.Mutex         // guards the fields below
	healthy bool
	seen    bool // has ever been healthy
	passes  int  // consecutive passes while unhealthy
	fails   int  // consecutive failures while healthy
	since   time.Time
	last    Check
	// marked is when MarkDown last ran: a probe begun before it was
	// answered by the process it marked as replaced, and says nothing.
	marked time.Time
}

// New returns a Checker. onChange is called on every transition, with the
// check that decided it, and once for a target whose first check fails, and with the target's lock held so transitions of
// one target arrive in order; it must not call back into the Checker for
// the same target.
func New(cfg Config, onChange func(t Target, healthy bool, reason Check)) *Checker {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Checker{
		cfg:      cfg,
		dial:     (&net.Dialer{}).DialContext,
		onChange: onChange,
		ctx:      ctx,
		cancel:   cancel,
		targets:  make(map[Target]*target),
		counts:   make(map[string]uint64),
	}
}

// Add starts probing t, which starts unhealthy. Until it has been healthy
// once, a single passing probe makes it healthy, so a fresh start (an
// instance still booting fails its first probes) does not wait Rise
// intervals. Adding a target twice is a no-op.
func (c *Checker) Add(t Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.targets[t]; ok || c.ctx.Err() != nil {
		return
	}
	ctx, stop := context.WithCancel(c.ctx)
	st := &target{since: time.Now(), stop: stop}
	c.targets[t] = st
	c.wg.Go(func() { c.loop(ctx, t, st) })
}

// Remove stops probing t and forgets it; its transitions stop. Removing a
// target not added is a no-op.
func (c *Checker) Remove(t Target) {
	c.mu.Lock()
	st := c.targets[t]
	delete(c.targets, t)
	c.mu.Unlock()
	if st != nil {
		st.stop()
	}
}

// Reconfigure replaces the probe settings: each target's next probe uses
// them (its next interval included). Rise and Fall counts in progress are
// kept.
func (c *Checker) Reconfigure(cfg Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cfg.Logger == nil {
		cfg.Logger = c.cfg.Logger
	}
	c.cfg = cfg
}

// config returns the settings in force.
func (c *Checker) config() Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Config returns the settings in force (after Reconfigure, the new ones).
func (c *Checker) Config() Config { return c.config() }

// Healthy reports whether t is currently healthy.
func (c *Checker) Healthy(t Target) bool { return c.State(t).Healthy }

// State returns t's health, its last check and since when; the zero State
// for a target not added.
func (c *Checker) State(t Target) State {
	c.mu.Lock()
	st := c.targets[t]
	c.mu.Unlock()
	if st == nil {
		return State{}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return State{Healthy: st.healthy, Since: st.since, Last: st.last}
}

// Counts returns how many checks ended with each code since the checker
// started, and their total duration.
func (c *Checker) Counts() (map[string]uint64, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts), c.took
}

// MarkDown makes t unhealthy at once (passive detection: it refused a
// connection); detail says what was seen. Probes must then pass Rise times
// in a row to bring it back.
func (c *Checker) MarkDown(t Target, detail string) {
	c.mu.Lock()
	st := c.targets[t]
	c.mu.Unlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.passes, st.fails = 0, 0
	st.last = Check{Code: PASSIVE, Detail: detail, Time: time.Now()}
	st.marked = st.last.Time
	if st.healthy {
		st.healthy, st.since = false, st.last.Time
		c.onChange(t, false, st.last)
	}
}

// Close stops every probe and waits for them to return.
func (c *Checker) Close() {
	c.cancel()
	c.wg.Wait()
}

func (c *Checker) loop(ctx context.Context, t Target, st *target) {
	cfg := c.config()
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		var ck Check
		began := time.Now()
		if cfg.Probe != nil {
			ck = cfg.Probe(ctx, t)
		} else {
			ck = c.check(ctx, cfg, t)
		}
		if ctx.Err() != nil {
			return // a probe cut short by Remove or Close says nothing
		}
		c.record(t, st, ck, began)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if next := c.config(); next.Interval != cfg.Interval {
			tick.Reset(next.Interval)
		}
		cfg = c.config()
	}
}

// record takes the check of a probe that began at began.
func (c *Checker) record(t Target, st *target, ck Check, began time.Time) {
	if c.ctx.Err() != nil {
		return // a probe cut short by Close says nothing about the instance
	}
	c.mu.Lock()
	c.counts[ck.Code]++
	c.took += ck.Took
	logSkip := ck.Code == SOCKERR && time.Since(c.skipLog) >= time.Second
	if logSkip {
		c.skipLog = time.Now()
	}
	c.mu.Unlock()
	if logSkip {
		c.config().Logger.Warn("could not probe an instance; its health stays as it was", "slot", t.Slot, "instance", t.Addr, "err", ck.Detail)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if began.Before(st.marked) {
		return // answered by the process MarkDown said was replaced
	}
	if ck.Code == SOCKERR {
		st.last = ck
		return // says nothing about the instance
	}
	first := st.last.Code == ""
	st.last = ck
	pass := ck.OK()
	rise, fall := c.config().Rise, c.config().Fall
	if first && !pass {
		// Down from the start: say why once, as a transition would.
		c.onChange(t, false, ck)
	}
	switch {
	case pass && !st.healthy:
		st.passes++
		if st.passes >= rise || !st.seen {
			st.healthy, st.seen, st.passes, st.since = true, true, 0, ck.Time
			c.onChange(t, true, ck)
		}
	case pass:
		st.fails = 0
	case st.healthy:
		st.fails++
		if st.fails >= fall {
			st.healthy, st.fails, st.since = false, 0, ck.Time
			c.onChange(t, false, ck)
		}
	default:
		st.passes = 0
	}
}
