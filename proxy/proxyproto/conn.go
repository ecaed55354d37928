package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// Mode is a listener's use of the PROXY protocol.
type Mode int

const (
	// Off takes no header: the bytes of one are what the connection's
	// protocol (HTTP, TLS) makes of them, an error.
	Off Mode = iota
	// Accept takes a header from a trusted peer when one comes; a trusted
	// peer's connection may come without.
	Accept
	// Require takes only connections that start with a header from a
	// trusted peer: any other is closed.
	Require
)

// Listener wraps the connections a net.Listener accepts in *Conn. It reads
// nothing in Accept: the header is read on the connection's own goroutine
// (Conn.ReadHeader, or its first Read), so a peer that sends nothing, or a
// header slowly, holds nothing but its own connection. Under Require, a
// connection from a peer that is not trusted is closed in Accept, before
// anything is read.
type Listener struct {
	net.Listener
	// Mode is Accept or Require.
	Mode Mode
	// Trusted reports whether a header from peer is believed. A peer that
	// is not trusted may not name another client: under Accept its bytes
	// go to the connection's protocol as they are (a header among them is
	// an error there), under Require its connections are closed.
	Trusted func(peer netip.Addr) bool
	// Refused counts connections closed under Require because their peer
	// was not trusted.
	Refused atomic.Uint64
}

// Accept returns the next connection, as a *Conn.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		trusted := l.Trusted != nil && l.Trusted(peerOf(nc))
		if !trusted && l.Mode == Require {
			l.Refused.Add(1) // before the close, which a test may be waiting to see
			nc.Close()
			continue
		}
		return &Conn{Conn: nc, expect: trusted, require: l.Mode == Require}, nil
	}
}

// peerOf returns nc's peer address, or the zero Addr.
func peerOf(nc net.Conn) netip.Addr {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Conn is a connection that may start with a PROXY header. Its reads, and
// RemoteAddr, come after the header; a Read before ReadHeader reads the
// header first, under the deadline then in force.
type Conn struct {
	net.Conn
	expect  bool // a header may come (the peer is trusted)
	require bool // and must
	done    bool // the header was read, or none is expected
	err     error
	rest    []byte                      // bytes read past the header, read first
	src     atomic.Pointer[net.TCPAddr] // the header's source
	header  Header
}

// Pending reports whether the header is yet to be read. It is for the
// goroutine that reads the connection.
func (c *Conn) Pending() bool { return c.expect && !c.done }

// Header returns the header read (Version 0 when there was none).
func (c *Conn) Header() Header { return c.header }

// RemoteAddr returns the client the header names, or the peer's address
// when there is none (yet).
func (c *Conn) RemoteAddr() net.Addr {
	if a := c.src.Load(); a != nil {
		return a
	}
	return c.Conn.RemoteAddr()
}

// Peer returns the address of the connection's peer, whatever the header
// says.
func (c *Conn) Peer() net.Addr { return c.Conn.RemoteAddr() }

// ReadHeader reads the PROXY header, if one is expected and not read
// yet, by the deadline; the connection's read deadline stays at it. It
// returns the error that makes the connection unusable: a malformed or
// overlong header, none under Require, the deadline.
func (c *Conn) ReadHeader(deadline time.Time) error {
	if !c.expect || c.done {
		return c.err
	}
	c.Conn.SetReadDeadline(deadline)
	return c.readHeader()
}

func (c *Conn) readHeader() error {
	c.done = true
	buf := make([]byte, 0, 256)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := c.Conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		h, size, perr := Parse(buf)
		switch {
		case perr == ErrNotProxy && !c.require:
			c.rest = buf // not a header: the connection's own bytes
			return nil
		case perr == ErrNotProxy:
			c.err = errors.New("proxyproto: connection without the PROXY header this listener requires")
			return c.err
		case perr != nil:
			c.err = perr
			return c.err
		case size > 0:
			c.header = h
			c.rest = buf[size:]
			if h.Source.IsValid() {
				c.src.Store(net.TCPAddrFromAddrPort(h.Source))
			}
			return nil
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.err = fmt.Errorf("proxyproto: reading the PROXY header: %w", err)
			return c.err
		}
	}
}

// Read reads what follows the header.
func (c *Conn) Read(p []byte) (int, error) {
	if c.expect && !c.done {
		if err := c.readHeader(); err != nil {
			return 0, err
		}
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) == 0 {
			c.rest = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Buffered returns how many bytes read past the header wait in the Conn,
// not in the socket.
func (c *Conn) Buffered() int { return len(c.rest) }

// CloseWrite shuts down the writing side, when the connection can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn returns the socket's, for waiting on it without reading.
// The caller must mind Buffered: bytes already read wait in the Conn.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// TrustList returns a Trusted function for the prefixes given.
func TrustList(prefixes []netip.Prefix) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
}
