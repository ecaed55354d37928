package proxy

import (
	"bufio"
	"context"
	"net"
	"sync"
	"time"

	"github.com/vipswap/vipswap/route"
)

// Connection pool limits per instance.
const (
	maxIdlePerInstance = 512
	idleTimeout        = 90 * time.Second
	// checkAfterIdle is how long a pooled connection may sit before it is
	// checked for a close by the instance (a keep-alive timeout, a drain)
	// before reuse. Idempotent requests reusing it sooner skip the check (it
	// costs a syscall): if the instance closed it, they are retried anyway.
	checkAfterIdle = time.Second
	bufferSize     = 4 << 10
)

// upstreamConn is one keep-alive connection to an instance.
type upstreamConn struct {
	net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	pool      *pool
	idleSince time.Time
	// stopWatch stops the watch that interrupts the connection's I/O when
	// the client's request is cancelled; false means it already fired and
	// the connection cannot be reused.
	stopWatch func() bool
}

// pool holds one instance's idle connections, most recently used last.
type pool struct {
	mu     sync.Mutex // guards idle and closed
	idle   []*upstreamConn
	closed bool
}

// poolFor returns inst's pool. Pools live as long as the proxy, like the
// instances they serve.
func (p *Proxy) poolFor(inst *route.Instance) *pool {
	if v, ok := p.pools.Load(inst); ok {
		return v.(*pool)
	}
	v, _ := p.pools.LoadOrStore(inst, &pool{})
	return v.(*pool)
}

// conn returns a pooled connection to inst that still looks alive, or dials
// a new one. check asks to verify every pooled connection before use, for
// requests that could not be retried if it turned out closed.
func (p *Proxy) conn(ctx context.Context, inst *route.Instance, check bool) (*upstreamConn, error) {
	pl := p.poolFor(inst)
	for {
		c := pl.take()
		if c == nil {
			break
		}
		idle := time.Since(c.idleSince)
		if idle > idleTimeout || ((check || idle > checkAfterIdle) && !c.alive()) {
			c.Close()
			continue
		}
		return c, nil
	}
	nc, err := p.dialer.DialContext(ctx, "tcp", inst.Addr)
	if err != nil {
		return nil, err
	}
	return &upstreamConn{Conn: nc, br: bufio.NewReaderSize(nc, bufferSize), bw: bufio.NewWriterSize(nc, bufferSize), pool: pl}, nil
}

func (pl *pool) take() *upstreamConn {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := len(pl.idle)
	if n == 0 {
		return nil
	}
	c := pl.idle[n-1]
	pl.idle[n-1] = nil
	pl.idle = pl.idle[:n-1]
	return c
}

// put returns c to the pool for reuse, or closes it when the pool is full
// or closed.
func (pl *pool) put(c *upstreamConn) {
	c.idleSince = time.Now()
	pl.mu.Lock()
	if pl.closed || len(pl.idle) >= maxIdlePerInstance {
		pl.mu.Unlock()
		c.Close()
		return
	}
	pl.idle = append(pl.idle, c)
	pl.mu.Unlock()
}

// close closes every idle connection and refuses new ones.
func (pl *pool) close() {
	pl.mu.Lock()
	idle := pl.idle
	pl.idle, pl.closed = nil, true
	pl.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// closeIdle closes the idle connections of every pool.
func (p *Proxy) closeIdle() {
	p.pools.Range(func(_, v any) bool {
		v.(*pool).close()
		return true
	})
}
