//lint:file-ignore SA1019 x/net/http2's ClientConn is one connection's RoundTrip without the Transport's own retries, which vipswap decides itself (docs/dependencies.md)

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/internal/writebehind"
	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/proxy/rawsock"
	"github.com/vipswap/vipswap/route"
)

// Connection pool limits per instance.
const (
	maxIdlePerInstance = 512
	idleTimeout        = 90 * time.Second
	bufferSize         = 4 << 10
	// reuseQuiet is how long a connection must have sat idle before it
	// carries another request. A broken instance may send the rest of an
	// answer (or a second one) in a later write; anything that arrives
	// within this time is seen by the check before reuse and the connection
	// is dropped, instead of being read as another request's answer. The
	// pool hands out the most recently used connection that has been
	// quiet that long, so under load this costs a few more idle
	// connections (about the request rate times reuseQuiet), not more
	// dials; 2 ms cost 7% of the throughput, 500 µs under 1%
	// (docs/performance.md).
	reuseQuiet = 500 * time.Microsecond
	// reuseUnsafeWithin bounds how long ago a pooled connection's last
	// request may have gone out for it to carry a request that may not be
	// sent twice (a method that is not idempotent, or a body, which is
	// read once): older, such a request goes on a new connection. An
	// instance closes an idle connection when its own keep-alive timeout
	// fires; if that close crosses the request on the wire, nothing tells
	// whether the instance read the request, so it cannot be sent again
	// and the client would get a 502. Instances' timeouts are seconds or
	// more (Node 5 s, gunicorn 2 s, Apache 5 s, nginx 75 s). Their idle
	// clock starts once they have sent their answer, which vipswap cannot
	// see (the answer's end may wait in socket buffers while a slow client
	// takes it), but never before the request arrived: counted from the
	// request, the bound holds whatever the client's pace. Idempotent
	// requests take any pooled connection: one that was dead is retried
	// on a new one. Options.unsafeReuseWithin overrides it (tests).
	reuseUnsafeWithin = time.Second
)

// upstreamConn is one keep-alive connection to an instance. Its bufio
// reader and writer go through Read and Write, which move the deadlines
// along; the embedded net.Conn is the raw connection.
type upstreamConn struct {
	net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	pool      *pool
	idleSince time.Time
	reused    bool // it carried a request before this one

	// fd is the socket's descriptor for alive's look: 0 until taken, -1
	// when there is none.
	fd int

	// readIdle and writeIdle, when set, are how long one read or write
	// may block: the deadline moves along with each. When zero, the
	// deadline last set by setReadDeadline stands (the response head's).
	readIdle, writeIdle     time.Duration
	readDeadline, writeDead int64 // the deadlines set last (clock.Nanos readings)

	// cancelled is set when the client's request was cancelled: every
	// deadline is then in the past, and a later deadline must not undo it.
	cancelled atomic.Bool
	// unwatch stops the watch that interrupts the connection's I/O when
	// the client's request is cancelled; false means it already fired and
	// the connection cannot be reused.
	unwatch func() bool
	// interrupt is c.interruptIO, made once: a method value taken per
	// request would be allocated per request.
	interrupt func()

	// rc is the socket of a cleartext connection, for flushAwaiting; nil
	// for TLS (its layer may hold bytes the socket no longer does).
	rc syscall.RawConn
	// await is c.awaitStep, made once; step and flushErr are its state.
	await    func(uintptr) bool
	step     int
	flushErr error
	// flushedAt is when the request went out whole.
	flushedAt time.Time
	// peekFirst defers alive's look at a reused connection to just before
	// the first byte of the request goes out (Write), where flushAwaiting
	// makes it: nothing may arrive unseen between the look and the wait.
	peekFirst bool
	sock      *rawsock.IO

	// readAhead, set while a chunked body is read, lets a read that fills
	// its buffer go on into ahead, in the same system call (see Read);
	// ahead[aheadAt:aheadEnd] is what was read so and not passed on yet.
	readAhead         bool
	aheadAt, aheadEnd int
	ahead             [aheadSize]byte
}

// aheadSize bounds what a read of a chunked body takes beyond the chunk it
// reads to the end of: enough for the chunk's CRLF and the next size line,
// or the body's last chunk and an empty trailer section.
const aheadSize = 64

// errStale is a reused connection found closed, or with bytes the
// instance sent unasked, before any byte of the request went out on it.
var errStale = errors.New("the pooled connection was closed, or had bytes sent unasked, before the request went out")

// flushAwaiting sends what bw holds (the end of a request) and, once it is
// out, waits until the instance's answer can be read, without reading: a
// read right after the write would find nothing (EAGAIN) and cost a system
// call per request for no bytes. The write (and, with peekFirst, alive's
// look before it) happens inside the poller's read wait (RawConn.Read),
// after it has forgotten any earlier readiness, so nothing that arrives
// from then on, the answer however quick, can be missed. The wait ends
// early on the read deadline or a cancellation; the read that follows then
// meets the same and reports it. It returns the write's error.
func (c *upstreamConn) flushAwaiting() error {
	// Only a reused connection whose look is still to come (peekFirst),
	// with the request whole in bw: bytes written before the wait began
	// (a body, a head larger than bw) could be answered before it, unseen,
	// as could bytes that came after an earlier look; and what a new
	// connection's instance sends before the request must be read as its
	// answer, as it was.
	if c.rc == nil || !c.peekFirst || c.buffered() > 0 {
		err := c.bw.Flush()
		c.flushedAt = clock.Now()
		return err
	}
	if c.await == nil {
		c.await = c.awaitStep
	}
	c.step, c.flushErr = 0, nil
	c.rc.Read(c.await)
	if c.step == 0 { // the wait failed before it began (deadline, close)
		c.flushErr = c.bw.Flush()
		c.flushedAt = clock.Now()
	}
	return c.flushErr
}

// awaitStep is flushAwaiting's callback: the first call writes and asks
// the poller to wait (unless the write failed), the next says readable.
func (c *upstreamConn) awaitStep(uintptr) bool {
	if c.step > 0 {
		return true
	}
	c.step = 1
	c.flushErr = c.bw.Flush()
	c.flushedAt = clock.Now()
	return c.flushErr != nil
}

// stopWatch stops the watch (see unwatch); false means the client's
// request was cancelled, or the watch was stopped before. It calls
// unwatch once: a stop of h1.AfterCancel called twice could stop a later
// watch of the client's connection (another attempt's).
func (c *upstreamConn) stopWatch() bool {
	stop := c.unwatch
	if stop == nil {
		return false
	}
	c.unwatch = nil
	return stop()
}

// pending reports whether more of the response is already buffered, where
// the body's reader sees it and can pass it on without waiting: respond
// sends what it passed on only when nothing is.
//
// Bytes read ahead do not count: the chunked reader cannot see them. Of a
// chunked body, buffered bytes count only with a line end among them: the
// chunked reader returns at a chunk's end when its buffer holds no whole
// line to go on with (part of the chunk's CRLF, as when a read's end falls
// between its CR and LF; part of the next size line), and then waits for
// the instance for the rest. Counted, those bytes would hold back what
// arrived (a streamed answer's event) until the instance sent more.
func (c *upstreamConn) pending() bool {
	n := c.br.Buffered()
	if n == 0 || !c.readAhead { // readAhead: a chunked body
		return n > 0
	}
	b, _ := c.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// release ends the exchange once the response was passed on whole: the
// connection goes back to the pool unless the client's cancellation
// interrupted it, the exchange leaves doubt about where the instance's
// answers end (reuseAfter), or the instance sent more than the response
// (put checks that).
func (c *upstreamConn) release(r *http.Request, resp *http.Response, o *Options) {
	if !c.stopWatch() || !reuseAfter(r, resp, o) {
		c.Close()
		return
	}
	c.pool.put(c)
}

var longAgo = time.Unix(1, 0)

// watch interrupts c's I/O when ctx is cancelled (the client went away).
func (c *upstreamConn) watch(ctx context.Context) {
	c.cancelled.Store(false)
	if c.interrupt == nil {
		c.interrupt = c.interruptIO
	}
	c.unwatch = h1.AfterCancel(ctx, c.interrupt)
}

// interruptIO makes c's reads and writes fail at once, for good: the
// client's request was cancelled.
func (c *upstreamConn) interruptIO() {
	c.cancelled.Store(true)
	c.Conn.SetDeadline(longAgo)
}

// setReadDeadline sets a fixed read deadline, t (a time from clock.Now,
// as the deadlines refresh compares it with), unless the request was
// cancelled.
func (c *upstreamConn) setReadDeadline(t time.Time) {
	c.readIdle = 0
	c.Conn.SetReadDeadline(t)
	c.readDeadline = t.UnixNano()
	if c.cancelled.Load() {
		c.Conn.SetDeadline(longAgo)
	}
}

// headDeadline gives the response head at most d (and at least 3/4 of
// it): a fixed deadline, moved only when the one in force is not within
// that range, since each move costs a timer update.
func (c *upstreamConn) headDeadline(d time.Duration) {
	c.readIdle = 0
	c.readDeadline = c.refresh(c.Conn.SetReadDeadline, c.readDeadline, d)
}

// idleReads makes each later read wait at most d.
func (c *upstreamConn) idleReads(d time.Duration) { c.readIdle = d }

// idleWrites makes each later write block at most d.
func (c *upstreamConn) idleWrites(d time.Duration) { c.writeIdle = d }

// Read reads from the instance, moving the read deadline along when
// readIdle is set. What an earlier read took ahead comes first.
//
// A chunked body is read to the end of each chunk exactly (bufio reads
// straight into the caller's buffer when it is empty and the chunk's rest
// is larger than itself), so what follows the chunk, often the body's end
// sent with it, would take a read of its own. With readAhead, a read that
// fills p goes on into ahead in the same system call.
func (c *upstreamConn) Read(p []byte) (int, error) {
	if c.aheadAt < c.aheadEnd {
		n := copy(p, c.ahead[c.aheadAt:c.aheadEnd])
		c.aheadAt += n
		return n, nil
	}
	if c.readIdle > 0 {
		c.readDeadline = c.refresh(c.Conn.SetReadDeadline, c.readDeadline, c.readIdle)
	}
	if c.sock != nil {
		if !c.readAhead {
			return c.sock.Read(p)
		}
		n, m, err := c.sock.ReadBeyond(p, c.ahead[:])
		c.aheadAt, c.aheadEnd = 0, m
		return n, err
	}
	return c.Conn.Read(p)
}

// buffered is how many bytes the instance sent that were read and not
// yet parsed.
func (c *upstreamConn) buffered() int { return c.br.Buffered() + c.aheadEnd - c.aheadAt }

// Write writes to the instance, moving the write deadline along. The
// first write of a request on a connection with peekFirst looks at it
// first (alive): a dead one gets errStale, nothing written.
func (c *upstreamConn) Write(p []byte) (int, error) {
	if c.peekFirst {
		c.peekFirst = false
		if !c.alive() {
			return 0, errStale
		}
	}
	if c.writeIdle > 0 {
		c.writeDead = c.refresh(c.Conn.SetWriteDeadline, c.writeDead, c.writeIdle)
	}
	if c.sock != nil {
		return c.sock.Write(p)
	}
	return c.Conn.Write(p)
}

// refresh moves a deadline along (clock.Refresh), keeping a cancellation
// in force.
func (c *upstreamConn) refresh(set func(time.Time) error, deadline int64, timeout time.Duration) int64 {
	moved := clock.Refresh(set, deadline, timeout)
	if moved != deadline && c.cancelled.Load() {
		c.Conn.SetDeadline(longAgo)
	}
	return moved
}

// reusable reports whether c can go back to the pool after a response:
// the instance sent nothing beyond it. Bytes after a response would be
// read as the next request's answer: a response meant for another client.
func (c *upstreamConn) reusable() bool { return c.buffered() == 0 }

// pool holds one instance's idle connections, in the order they were put
// back, and its HTTP/2 connections, for one way of reaching it (an
// Upstream's key: protocol and TLS).
type pool struct {
	mu     sync.Mutex // guards idle, closed, h2 and dialing
	idle   []*upstreamConn
	closed bool
	total  *atomic.Int64 // idle connections in every pool
	max    int64         // bound on total

	up   *Upstream   // how the instance is reached
	tls  *tls.Config // up.TLS with the server name and ALPN set; nil for cleartext
	addr string      // the instance's address

	// HTTP/2 (protocol h2c and h2): the connections, each carrying
	// many streams; dialing is the dial under way, if any.
	h2t     *http2.Transport
	h2      []h2pooled
	dialing *h2dial
}

// h2pooled is a pool's HTTP/2 connection, and the connection it writes
// to: x/net's Close sends what is left first, for up to
// InstanceWriteTimeout, so a forced close aborts the writes before.
type h2pooled struct {
	cc *http2.ClientConn
	wb *writebehind.Conn
}

// abort closes x at once, whatever it has left to send.
func (x h2pooled) abort() {
	x.wb.Abort()
	x.cc.Close()
}

// poolKey names a pool: an instance, and how it is reached.
type poolKey struct {
	inst *route.Instance
	up   string // Upstream.key
}

// poolFor returns the pool of inst reached as up says (nil: HTTP/1.1 in
// cleartext). Pools live until their instance leaves the routing table
// (Apply) or the way to reach it changes (Reconfigure).
//
// Cleartext HTTP/1.1 pools are keyed by the instance alone (pools): the
// request path boxes no key for them.
func (p *Proxy) poolFor(inst *route.Instance, up *Upstream) *pool {
	var k any = inst
	m := &p.pools
	if key := up.key(); key != "" {
		k, m = poolKey{inst: inst, up: key}, &p.upPools
	}
	if v, ok := m.Load(k); ok {
		return v.(*pool)
	}
	pl := &pool{total: &p.idle, max: int64(p.opts.Load().MaxIdleConns), up: up, addr: inst.Addr}
	if up != nil {
		pl.init(p.opts.Load())
	}
	v, _ := m.LoadOrStore(k, pl)
	return v.(*pool)
}

// rangePools calls f with every pool, its instance and how it reaches
// it (Upstream.key), and deletes those for which f returns true.
func (p *Proxy) rangePools(f func(inst *route.Instance, up string, pl *pool) (drop bool)) {
	p.pools.Range(func(k, v any) bool {
		if f(k.(*route.Instance), "", v.(*pool)) {
			p.pools.Delete(k)
		}
		return true
	})
	p.upPools.Range(func(k, v any) bool {
		pk := k.(poolKey)
		if f(pk.inst, pk.up, v.(*pool)) {
			p.upPools.Delete(k)
		}
		return true
	})
}

// conn returns a pooled connection to inst on which nothing arrived while it
// sat idle, or dials a new one (always, when fresh). Any byte the instance
// sent unasked (a late 408, the rest of a body it should not have sent) or
// its close makes a pooled connection unusable: it is closed and the next
// one tried.
//
// With deferPeek, a cleartext pooled connection is looked at when the
// request's first byte goes out rather than here (see peekFirst); a dead
// one then fails the attempt with errStale, before anything was sent.
//
// sentWithin, when not zero, bounds how long ago a pooled connection's last
// request went out for it to be taken (see reuseUnsafeWithin); when no
// pooled one is that recent, a new connection is dialled and the pool left
// as it is.
func (p *Proxy) conn(ctx context.Context, inst *route.Instance, up *Upstream, fresh, deferPeek bool, sentWithin, connectTimeout time.Duration) (*upstreamConn, error) {
	pl := p.poolFor(inst, up)
	for !fresh {
		c := pl.take(sentWithin)
		if c == nil {
			break
		}
		if deferPeek && c.rc != nil && time.Since(c.idleSince) <= idleTimeout && c.buffered() == 0 {
			c.peekFirst, c.reused = true, true
			return c, nil
		}
		if time.Since(c.idleSince) > idleTimeout || !c.alive() {
			c.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
	nc, err := pl.dial(ctx, connectTimeout)
	if err != nil {
		return nil, err
	}
	c := &upstreamConn{Conn: nc, pool: pl}
	if tc, ok := nc.(*net.TCPConn); ok {
		c.rc, _ = tc.SyscallConn()
		if c.rc != nil && rawsock.Supported {
			c.sock = rawsock.New(c.rc, nc)
		}
	}
	c.br = bufio.NewReaderSize(c, bufferSize)
	c.bw = bufio.NewWriterSize(c, bufferSize)
	return c, nil
}

// take returns the most recently put back connection that has been quiet
// for reuseQuiet, or nil when there is none. With sentWithin, only one
// whose last request went out within it (flushedAt) will do: the most
// recently put back of those. Connections are put back after their request
// went out, so once one was put back longer ago than sentWithin, none
// further down qualifies.
func (pl *pool) take(sentWithin time.Duration) *upstreamConn {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	now := clock.Now()
	cut := now.Add(-reuseQuiet)
	i := len(pl.idle) - 1
	for i >= 0 && pl.idle[i].idleSince.After(cut) {
		i--
	}
	if i < 0 {
		return nil
	}
	for sentWithin > 0 && now.Sub(pl.idle[i].flushedAt) > sentWithin {
		i--
		if i < 0 || now.Sub(pl.idle[i].idleSince) > sentWithin {
			return nil // every one further down was put back earlier still
		}
	}
	c := pl.idle[i]
	n := copy(pl.idle[i:], pl.idle[i+1:])
	pl.idle[i+n] = nil
	pl.idle = pl.idle[:i+n]
	pl.total.Add(-1)
	return c
}

// put returns c to the pool for reuse, or closes it when the pool is full
// or closed, or when anything is buffered beyond the response just read.
func (pl *pool) put(c *upstreamConn) {
	if !c.reusable() {
		c.Close()
		return
	}
	c.idleSince = clock.Now()
	c.readIdle, c.writeIdle = 0, 0
	pl.mu.Lock()
	if pl.closed || len(pl.idle) >= maxIdlePerInstance || pl.total.Load() >= pl.max {
		pl.mu.Unlock()
		c.Close()
		return
	}
	pl.idle = append(pl.idle, c)
	pl.total.Add(1)
	pl.mu.Unlock()
}

// close closes every idle connection and refuses new ones. HTTP/2
// connections close once their streams have ended (graceful); with
// force, at once.
func (pl *pool) close(p *Proxy, force bool) {
	pl.mu.Lock()
	idle, h2 := pl.idle, pl.h2
	pl.idle, pl.h2, pl.closed = nil, nil, true
	pl.total.Add(-int64(len(idle)))
	pl.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	for _, x := range h2 {
		if force {
			x.abort()
			continue
		}
		p.closing.Go(func() {
			// Shutdown waits for the streams in flight; the proxy's
			// Shutdown closes what is left, at once (Shutdown may
			// itself wait to send its GOAWAY).
			ctx, cancel := context.WithCancel(context.Background())
			stop := context.AfterFunc(p.closeCtx, func() { cancel(); x.wb.Abort() })
			defer stop()
			defer cancel()
			if x.cc.Shutdown(ctx) != nil {
				x.abort()
			}
		})
	}
}

// closeIdle closes the connections of every pool.
func (p *Proxy) closeIdle() {
	p.rangePools(func(_ *route.Instance, _ string, pl *pool) bool {
		pl.close(p, true)
		return true
	})
	p.closeAll()
	p.closing.Wait()
}
