package control

import (
	"context"
	"sync"
	"time"

	"github.com/vipswap/vipswap/route"
)

// feed hands routing tables to one data plane from a goroutine of its own:
// planes apply side by side, a slow one (a remote load balancer) holds up
// neither the others nor the controller, and each applies the tables in
// the order they were built, skipping to the newest when it falls behind.
type feed struct {
	plane  DataPlane
	remote bool

	mu      sync.Mutex
	next    *route.Table  // the newest table given, not yet applied
	given   uint64        // the build number of the newest table given
	applied uint64        // the build number of the newest table applied (or refused)
	rev     uint64        // the revision of the newest table applied (or refused)
	done    chan struct{} // closed (and replaced) when a table was applied
	kick    chan struct{}
}

func newFeed(p DataPlane) *feed {
	_, remote := p.(RemotePlane)
	return &feed{plane: p, remote: remote, done: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// give hands t, built as number seq, to the feed's goroutine.
func (f *feed) give(t *route.Table, seq uint64) {
	f.mu.Lock()
	if seq > f.given {
		f.next, f.given = t, seq
	}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// run applies what it is given until ctx ends.
func (c *Controller) runFeed(f *feed) {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-f.kick:
		}
		f.mu.Lock()
		t, seq := f.next, f.given
		f.next = nil
		f.mu.Unlock()
		if t == nil {
			continue
		}
		start := time.Now()
		if err := f.plane.Apply(t); err != nil {
			c.log.Error("data plane refused the routing table", "revision", t.Revision, "err", err)
		} else if f.remote {
			took := time.Since(start)
			if m, ok := f.plane.(Measurer); ok {
				if d, ok := m.Converged(t.Revision); ok {
					took = d
				}
			}
			c.mu.Lock()
			c.recordConvergedLocked(t.Revision, took)
			c.mu.Unlock()
		}
		f.mu.Lock()
		f.applied, f.rev = max(f.applied, seq), max(f.rev, t.Revision)
		close(f.done)
		f.done = make(chan struct{})
		f.mu.Unlock()
	}
}

// waitFor waits until the feed applied the table built as number seq (or
// a newer one), or ctx ends.
func (f *feed) waitFor(ctx context.Context, reached func(f *feed) bool) {
	for {
		f.mu.Lock()
		ok, ch := reached(f), f.done
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// flusher flushes when asked by flushSoon, until the controller closes.
func (c *Controller) flusher() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.flushKick:
			c.handOver()
		}
	}
}

// flushSoon asks the flusher to hand the newest table to the data planes
// and returns at once: health transitions take this way, never applying
// on the checker's goroutine.
func (c *Controller) flushSoon() {
	select {
	case c.flushKick <- struct{}{}:
	default:
	}
}

// handOver gives the newest table built to every data plane's feed, and
// returns the feeds given it with the table's build number (0: none was
// pending). It must be called without c.mu.
//
// Remote planes get no table until every instance's first health check
// has answered (or a probe's interval and timeout have passed): a table
// built before that calls every instance unhealthy, and would drain every
// server of a load balancer that serves traffic when vipswap restarts.
func (c *Controller) handOver() ([]*feed, uint64) {
	c.mu.Lock()
	t, seq := c.pending, c.built
	c.pending = nil
	gate := c.remoteGate
	c.mu.Unlock()
	var given []*feed
	for _, f := range c.feeds {
		if f.remote && !gate {
			continue
		}
		if t != nil {
			f.give(t, seq)
		}
		given = append(given, f)
	}
	return given, seq
}

// flush hands the newest table built to every data plane and waits until
// each has applied it (or a newer one): when flush returns, the table
// built before it was called is in force on every plane that takes
// tables now. It must be called without c.mu.
func (c *Controller) flush() {
	given, seq := c.handOver()
	for _, f := range given {
		f.waitFor(c.ctx, func(f *feed) bool { return f.applied >= seq })
	}
}

// waitFlushed waits until the data planes applied the table of revision
// rev (or a newer one), or ctx ends. Remote planes that take no tables
// yet are not waited for.
func (c *Controller) waitFlushed(ctx context.Context, rev uint64) {
	c.mu.Lock()
	gate := c.remoteGate
	c.mu.Unlock()
	for _, f := range c.feeds {
		if f.remote && !gate {
			continue
		}
		f.waitFor(ctx, func(f *feed) bool { return f.rev >= rev })
	}
}
