package proxy

import (
	"time"

	"github.com/vipswap/vipswap/route"
)

const (
	// sweepEvery is how often the idle instance connections are looked
	// over: those idle past idleTimeout are closed, and so are those the
	// instance closed (most close theirs after a few seconds), which
	// would otherwise hold a descriptor each until a request took them.
	sweepEvery = 5 * time.Second
	// sweepLooks bounds how many of one pool's connections a sweep looks
	// at (a non-blocking read each), the oldest first.
	sweepLooks = 64
)

// sweepIdle sweeps every pool each o.sweepEvery until the proxy closes.
func (p *Proxy) sweepIdle() {
	tick := time.NewTicker(p.opts.Load().sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-p.closeCtx.Done():
			return
		case now := <-tick.C:
			p.rangePools(func(_ *route.Instance, _ string, pl *pool) bool {
				for _, c := range pl.sweep(now, p.opts.Load().sweepEvery) {
					c.Close()
				}
				return false
			})
		}
	}
}

// sweep takes out of the pool the connections idle past idleTimeout, and
// those, idle for at least quiet, that the instance closed or sent bytes
// on unasked (at most sweepLooks looked at), and returns them to close.
// The pool's lock is held while it looks: a connection in the pool is
// no one else's.
func (pl *pool) sweep(now time.Time, quiet time.Duration) []*upstreamConn {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	var gone []*upstreamConn
	keep := pl.idle[:0]
	looks := 0
	for _, c := range pl.idle { // the oldest first
		idle := now.Sub(c.idleSince)
		switch {
		case idle > idleTimeout:
			gone = append(gone, c)
		case idle >= quiet && looks < sweepLooks:
			looks++
			if !c.alive() {
				gone = append(gone, c)
				continue
			}
			keep = append(keep, c)
		default:
			keep = append(keep, c)
		}
	}
	clear(pl.idle[len(keep):])
	pl.idle = keep
	pl.total.Add(-int64(len(gone)))
	return gone
}
