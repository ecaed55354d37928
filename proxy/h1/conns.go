package h1

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
)

// This file holds the server's connection limits: MaxConns, reached by
// closing the connection idle the longest, and MaxConnsPerClient.

// retryReclaim is how often a server at MaxConns with no idle connection
// looks again for one (a connection that parks wakes it at once).
const retryReclaim = 100 * time.Millisecond

// acquireSlot waits until the server may hold one more connection: a free
// slot, or one freed by closing the connection idle the longest. It
// reports false when the server is shutting down and has no free slot: a
// connection accepted as Shutdown began is served (its client may be
// sending its request already; closing it would reset that), and Shutdown
// waits for it.
func (s *Server) acquireSlot() bool {
	if s.slots == nil {
		return true
	}
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	for {
		select {
		case s.slots <- struct{}{}:
			return true
		case <-s.done:
			return false
		default:
		}
		if s.reclaimIdle() {
			s.reclaimed.Add(1)
			if s.Notice != nil && s.reclaimLog.due() {
				s.Notice(fmt.Sprintf("h1: at the limit of %d connections: closing the connections idle the longest to admit new ones (%d so far)",
					s.MaxConns, s.reclaimed.Load()))
			}
		}
		t := time.NewTimer(retryReclaim)
		select {
		case s.slots <- struct{}{}:
			t.Stop()
			return true
		case <-s.done:
			t.Stop()
			return false
		case <-s.idled: // a connection parked: it may be reclaimed
			t.Stop()
		case <-t.C:
		}
	}
}

// releaseSlot gives back a connection's slot.
func (s *Server) releaseSlot() {
	if s.slots != nil {
		<-s.slots
	}
}

// reclaimIdle closes (or, for one waiting on its goroutine, makes close)
// the connection idle the longest, and reports whether there was one.
// Idle means between requests: parked, or waiting for the first byte of
// its next request (its first included); a connection that has sent part
// of a head, or whose request is being served, is never closed.
//
// Where connections park, parked ones are reclaimed first: a parkable
// one waiting on its goroutine parks within parkAfter, and
// waking the accept loop then spares a scan of every connection. Only when
// none is parked are those that never park (TLS ones, which wait their idle
// time on their goroutines) looked for: else idle TLS connections would
// hold every slot until their IdleTimeout.
func (s *Server) reclaimIdle() bool {
	if s.parker != nil && s.parker.reclaim() {
		return true
	}
	if s.h2Pending.Load() > 0 && clock.Nanos()-s.h2ReclaimAt.Load() < int64(h2ReclaimWait) {
		// An HTTP/2 connection sent a GOAWAY is on its way out (after its
		// client has had a moment to read it): wait for its slot rather
		// than close another.
		return false
	}
	for range 3 { // another try if the one found got a request meanwhile
		var oldest *conn
		var since int64
		s.mu.Lock()
		for c := range s.conns {
			if st := c.state.Load(); st == stateIdle && (s.parker == nil || !c.parkable) || st == stateH2Idle {
				if t := c.idleSince.Load(); oldest == nil || t < since {
					oldest, since = c, t
				}
			}
		}
		s.mu.Unlock()
		if oldest == nil {
			return false
		}
		// The connection's goroutine sees the state it no longer owns when
		// its read returns, and closes.
		if oldest.state.CompareAndSwap(stateIdle, stateReclaimed) {
			oldest.nc.SetReadDeadline(longAgo)
			return true
		}
		// An HTTP/2 one is sent a GOAWAY: a stream its client opened
		// meanwhile is refused, which the client may retry elsewhere
		// (RFC 9113 8.7); then it closes.
		if oldest.state.CompareAndSwap(stateH2Idle, stateReclaimed) {
			s.h2Pending.Add(1)
			s.h2ReclaimAt.Store(clock.Nanos())
			oldest.goAway()
			return true
		}
	}
	return false
}

// busyOf returns how many of client's connections are in use: all but
// those idle between two requests (kept alive, parked or waiting on their
// goroutine). A connection that has not sent its first request yet is in
// use: it may be a slow head.
func (s *Server) busyOf(client netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.client != client {
			continue
		}
		st := c.state.Load()
		idle := c.kept.Load() && (st == stateIdle || st == stateParked || st == stateH2Idle)
		if !idle || c.fd >= 0 && unread(c.fd) { // a request arriving counts as in use
			n++
		}
	}
	return n
}

// Reclaimed returns how many idle connections the server has closed to
// admit new ones at MaxConns.
func (s *Server) Reclaimed() uint64 { return s.reclaimed.Load() }

// Refused returns how many connections the server has closed at once
// because their client already held MaxConnsPerClient.
func (s *Server) Refused() uint64 { return s.refused.Load() }

// clientOf returns the client a connection counts against under
// MaxConnsPerClient, or the zero Addr for one without an IP address.
func clientOf(nc net.Conn) netip.Addr {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return clientKey(a.AddrPort().Addr())
	}
	return netip.Addr{}
}

// clientKey groups addresses into clients: an IPv4 address is a client,
// and so is an IPv6 /64, since one host is commonly given a whole /64 and
// may use any address in it.
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// admit counts a new connection against its client, or reports false if
// the client already holds the cap (0: none) and the connection must be
// refused.
func (s *Server) admit(client netip.Addr, limit int) (n int, ok bool) {
	if !client.IsValid() {
		return 0, true
	}
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	n = s.clients[client]
	if limit > 0 && n >= limit {
		return n, false
	}
	s.clients[client] = n + 1
	return n + 1, true
}

// leave uncounts a closed connection of client.
func (s *Server) leave(client netip.Addr) {
	if !client.IsValid() {
		return
	}
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	if n := s.clients[client] - 1; n > 0 {
		s.clients[client] = n
	} else {
		delete(s.clients, client)
	}
}

// refuseClient closes nc, whose client holds its cap of n connections, at once:
// nothing is read or answered, which costs no goroutine and no time. It
// says so at most once a second.
func (s *Server) refuseClient(nc net.Conn, client netip.Addr, n int) {
	s.refused.Add(1) // counted before the client can see the close
	nc.Close()
	if s.Notice != nil && s.refuseLog.due() {
		s.Notice(fmt.Sprintf("h1: refused a connection from %s: it holds %d, the most one client may (%d refused so far)",
			client, n, s.refused.Load()))
	}
}

// everySecond lets something happen at most once a second, whichever
// goroutine asks.
type everySecond struct{ last atomic.Int64 }

// due reports whether a second has passed since it last reported true.
func (e *everySecond) due() bool {
	now, last := clock.Nanos(), e.last.Load()
	return now-last >= int64(time.Second) && e.last.CompareAndSwap(last, now)
}
