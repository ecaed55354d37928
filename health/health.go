// Package health decides whether instances are healthy: active HTTP probes
// with rise and fall thresholds, and passive marks from the data plane when an
// instance refuses a connection. It reports each transition to a callback; it
// knows nothing of routing tables or the store.
package health

import (
	"context"
	"net/http"
	"net/url"
	"strings"
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
	// Timeout bounds one probe.
	Timeout time.Duration
	// Rise is how many consecutive passes make a target healthy.
	Rise int
	// Fall is how many consecutive failures make it unhealthy.
	Fall int
}

// Checker probes targets and reports health transitions. Its methods are safe
// for concurrent use.
type Checker struct {
	cfg      Config
	client   *http.Client
	onChange func(Target, bool)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards targets
	targets map[Target]*target
}

// target is one target's probe state.
type target struct {
	mu      sync.Mutex // guards the fields below
	healthy bool
	seen    bool // has ever been healthy
	passes  int  // consecutive passes while unhealthy
	fails   int  // consecutive failures while healthy
}

// New returns a Checker. onChange is called on every transition, with the
// target's lock held so transitions of one target arrive in order; it must not
// call back into the Checker for the same target.
func New(cfg Config, onChange func(t Target, healthy bool)) *Checker {
	ctx, cancel := context.WithCancel(context.Background())
	return &Checker{
		cfg: cfg,
		client: &http.Client{
			// A fresh connection per probe: an instance that stopped
			// accepting must fail its probe even if an old connection is open.
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		onChange: onChange,
		ctx:      ctx,
		cancel:   cancel,
		targets:  make(map[Target]*target),
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
	st := &target{}
	c.targets[t] = st
	c.wg.Go(func() { c.loop(t, st) })
}

// Healthy reports whether t is currently healthy.
func (c *Checker) Healthy(t Target) bool {
	c.mu.Lock()
	st := c.targets[t]
	c.mu.Unlock()
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.healthy
}

// MarkDown makes t unhealthy at once (passive detection: it refused a
// connection). Probes must then pass Rise times in a row to bring it back.
func (c *Checker) MarkDown(t Target) {
	c.mu.Lock()
	st := c.targets[t]
	c.mu.Unlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.passes, st.fails = 0, 0
	if st.healthy {
		st.healthy = false
		c.onChange(t, false)
	}
}

// Close stops every probe and waits for them to return.
func (c *Checker) Close() {
	c.cancel()
	c.wg.Wait()
}

func (c *Checker) loop(t Target, st *target) {
	u := "http://" + t.Addr + strings.ReplaceAll(c.cfg.Path, "{slot}", url.QueryEscape(t.Slot))
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		c.record(t, st, c.probe(u))
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe reports whether one GET of u answered 2xx or 3xx within the timeout.
func (c *Checker) probe(u string) bool {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "vipswap-health")
	resp, err := c.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func (c *Checker) record(t Target, st *target, pass bool) {
	if c.ctx.Err() != nil {
		return // a probe cut short by Close says nothing about the instance
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case pass && !st.healthy:
		st.passes++
		if st.passes >= c.cfg.Rise || !st.seen {
			st.healthy, st.seen, st.passes = true, true, 0
			c.onChange(t, true)
		}
	case pass:
		st.fails = 0
	case st.healthy:
		st.fails++
		if st.fails >= c.cfg.Fall {
			st.healthy, st.fails = false, 0
			c.onChange(t, false)
		}
	default:
		st.passes = 0
	}
}
