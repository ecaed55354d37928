package h1

import (
	"net"
	"sync"
	"syscall"
	"time"
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

	mu      sync.Mutex      // guards conns and stopped
	conns   map[int32]*conn // parked, or watched while serving a request
	stopped bool
	done    chan struct{}
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
	if p.stopped || c.fd < 0 {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(c.fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		return false
	}
	p.conns[int32(c.fd)] = c
	return true
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
		ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(c.fd)}
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

// take removes the connection on fd and returns it if it is parked. A
// watched one has its request cancelled here, under the lock its own
// unwatch takes before it can release its context.
func (p *parker) take(fd int32) *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.conns[fd]
	if c == nil {
		return nil
	}
	delete(p.conns, fd)
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
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
	lastSweep := time.Now()
	for {
		n, err := syscall.EpollWait(p.epfd, events, int(watchAfter/2/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			n = 0
		}
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == int32(p.wake[0]) {
				return
			}
			c := p.take(ev.Fd)
			switch {
			case c == nil:
			case ev.Events&syscall.EPOLLIN != 0:
				go c.serve() // the client sent something
			default:
				c.close() // hung up without sending anything
			}
		}
		now := time.Now()
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
	for fd, c := range p.conns {
		if c.state.Load() == stateParked && now.UnixNano() >= c.idleLimit() {
			delete(p.conns, fd)
			syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
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
	p.mu.Unlock()
	for _, c := range parked {
		c.close()
	}
	syscall.Write(p.wake[1], []byte{1})
	<-p.done
	p.closeFDs()
}
