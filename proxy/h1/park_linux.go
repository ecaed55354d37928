package h1

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
)

// parker holds idle connections in an epoll set of its own, so an idle
// connection costs its socket and a few hundred bytes: no goroutine, no
// buffers. When a parked client sends, the connection gets a goroutine
// again; when it closes or stays idle past the idle timeout, it is closed.
//
// The same set watches the clients of slow requests: a request running for
// longer than watchAfter has its connection watched for a hang-up, which
// cancels the request's context (so a request holding for an instance, or
// waiting on a slow one, is let go when its client leaves). Fast requests
// pay nothing for this.
//
// Go's own poller keeps the sockets registered too; the two do not
// interfere, since the parker never reads.
type parker struct {
	s    *Server
	epfd int
	wake [2]int // a pipe whose read end is in the set, to stop the loop

	mu      sync.Mutex      // guards conns, the list of parked ones, and stopped
	conns   map[int32]*conn // parked, or watched while serving a request
	stopped bool
	done    chan struct{}

	// oldest and newest end the list of parked connections, in the order
	// they parked (linked by conn.older and conn.newer): the first is
	// the one idle the longest, which a new connection replaces at the
	// server's MaxConns.
	oldest, newest *conn
}

// watchAfter is how long a request runs before its client is watched.
const watchAfter = 200 * time.Millisecond

// newParker returns a parker, or nil if the system refuses one (then
// connections wait for their next request on their goroutine).
func newParker(s *Server) *parker {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	p := &parker{s: s, epfd: epfd, conns: map[int32]*conn{}, done: make(chan struct{})}
	if err := syscall.Pipe2(p.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return nil
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil
	}
	return p
}

func (p *parker) closeFDs() {
	syscall.Close(p.epfd)
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
}

// park takes c, which has no goroutine or buffers any more. It reports
// false if it cannot (the server is stopping); the caller then closes c.
func (p *parker) park(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || !c.parkable {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(c.fd), Pad: c.id}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return false
	}
	p.conns[int32(c.fd)] = c
	p.push(c)
	select {
	case p.s.idled <- struct{}{}: // an accept waiting at MaxConns may take its place
	default:
	}
	return true
}

// push appends c to the list of parked connections.
func (p *parker) push(c *conn) {
	c.older, c.newer = p.newest, nil
	if p.newest != nil {
		p.newest.newer = c
	} else {
		p.oldest = c
	}
	p.newest = c
}

// unlink takes c, parked, out of the list.
func (p *parker) unlink(c *conn) {
	if c.older != nil {
		c.older.newer = c.newer
	} else {
		p.oldest = c.newer
	}
	if c.newer != nil {
		c.newer.older = c.older
	} else {
		p.newest = c.older
	}
	c.older, c.newer = nil, nil
}

// forget takes c out of the set, and out of the list if it is parked.
func (p *parker) forget(c *conn) {
	delete(p.conns, int32(c.fd))
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	if c.state.Load() == stateParked {
		p.unlink(c)
	}
}

// reclaimScan bounds how many parked connections with a request waiting
// reclaim passes over (the loop wakes them) before it gives up.
const reclaimScan = 16

// reclaim closes the connection parked the longest, for a new one at the
// server's MaxConns, and reports whether there was one. It passes over
// those on which bytes have arrived: closing a socket with unread bytes
// sends a reset, which would destroy the request the client just sent,
// and that request is answered anyway. A request the client sends after
// this look, before it sees the close, still meets a closed connection:
// that race is the one every server that closes idle keep-alive
// connections has, and clients retry idempotent requests on it (RFC 9112,
// 9.3.1). Taking the oldest makes it the least likely.
func (p *parker) reclaim() bool {
	p.mu.Lock()
	var c *conn
	for o, n := p.oldest, 0; o != nil && n < reclaimScan; o, n = o.newer, n+1 {
		if !unread(o.fd) {
			c = o
			break
		}
	}
	if c != nil {
		p.forget(c)
	}
	p.mu.Unlock()
	if c == nil {
		return false
	}
	c.close()
	return true
}

// unread reports whether bytes wait to be read on the socket fd.
func unread(fd int) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == nil && n > 0
}

// awaitBytes waits, under nc's read deadline, until bytes (or an end)
// wait to be read on nc, without reading them.
func awaitBytes(nc net.Conn) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return errors.ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN && err != syscall.EINTR // bytes, an end or an error: the reader sees which
	})
}

// socket returns the descriptor of nc, or -1.
func socket(nc net.Conn) int {
	fd := -1
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(s uintptr) { fd = int(s) })
		}
	}
	return fd
}

// start runs the loop; stop ends it.
func (p *parker) start() { go p.run() }

// watch arms the hang-up watch on the connections whose request has run
// longer than watchAfter.
func (p *parker) watch(now time.Time) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	for c := range p.s.conns {
		start := c.reqStart.Load()
		if start == 0 || now.UnixNano()-start < int64(watchAfter) || c.watched.Load() || c.fd < 0 {
			continue
		}
		// The connection clears reqStart then checks watched; this sets
		// watched then checks reqStart: one of the two sees the other.
		c.watched.Store(true)
		if c.reqStart.Load() != start {
			c.watched.Store(false)
			continue
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(c.fd), Pad: c.id}
		if syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev) != nil {
			continue // leave watched set: no second try for this request
		}
		p.conns[int32(c.fd)] = c
	}
}

// unwatch ends the watch on c, whose request has ended.
func (p *parker) unwatch(c *conn) {
	p.mu.Lock()
	if p.conns[int32(c.fd)] == c {
		delete(p.conns, int32(c.fd))
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	}
	p.mu.Unlock()
	c.watched.Store(false)
}

// take removes the connection of an event, on fd and numbered id, and
// returns it if it is parked. (The number tells it from a later connection
// on the same descriptor: one closed by a reclaim, say, while the loop
// held its event.) A watched one has its request cancelled here, under the
// lock its own unwatch takes before it can release its context.
func (p *parker) take(fd, id int32) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.conns[fd]
	if c == nil || c.id != id {
		return nil
	}
	p.forget(c)
	if c.state.Load() != stateParked {
		c.cancel() // a watched client hung up
		return nil
	}
	return c
}

// run waits for parked connections to become readable, and closes those
// idle too long, until stop.
func (p *parker) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	lastSweep := clock.Now()
	for {
		n, err := syscall.EpollWait(p.epfd, events, int(watchAfter/2/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			n = 0
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == int32(p.wake[0]) {
				return
			}
			c := p.take(ev.Fd, ev.Pad)
			switch {
			case c == nil:
			case ev.Events&syscall.EPOLLIN != 0:
				go c.serve() // the client sent something
			default:
				c.close() // hung up without sending anything
			}
		}
		now := clock.Now()
		p.watch(now)
		if now.Sub(lastSweep) >= time.Second {
			lastSweep = now
			p.sweep(now)
		}
	}
}

// sweep closes parked connections idle for longer than the idle timeout,
// and new ones that have sent nothing for the read-header timeout.
func (p *parker) sweep(now time.Time) {
	var expired []*conn
	p.mu.Lock()
	for _, c := range p.conns {
		if c.state.Load() == stateParked && now.UnixNano() >= c.idleLimit() {
			p.forget(c)
			expired = append(expired, c)
		}
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// stop closes every parked connection and ends the loop. Connections that
// try to park afterwards are refused.
func (p *parker) stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	var parked []*conn
	for fd, c := range p.conns {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		if c.state.Load() == stateParked {
			parked = append(parked, c)
		}
	}
	p.conns = nil
	p.oldest, p.newest = nil, nil
	p.mu.Unlock()
	for _, c := range parked {
		if !c.kept.Load() {
			// Never used: its client may be sending its first request
			// now. Its goroutine gives it freshGrace (awaitRequest).
			go c.serve()
			continue
		}
		c.close()
	}
	syscall.Write(p.wake[1], []byte{1})
	<-p.done
	p.closeFDs()
}
