package proxy

import (
	"crypto/tls"
	"syscall"
	"unsafe"
)

// alive reports whether the instance has not closed c while it sat idle. It
// peeks at the socket without blocking: "would block" means open and quiet;
// end of file (the instance closed it) or unexpected bytes mean not usable.
// A read with an expired deadline would not do: Go's poller reports the
// timeout before it reads.
//
// The look is one non-blocking recvfrom on the socket's descriptor, taken
// once per connection: going through RawConn.Read for it would add the
// poller's locking to every request. It is safe: a connection taken from the
// pool belongs to one request, and nothing closes it meanwhile.
func (c *upstreamConn) alive() bool {
	if c.buffered() > 0 {
		return false
	}
	if c.fd < 0 {
		return true
	}
	tc, _ := c.Conn.(*tls.Conn)
	if c.fd == 0 {
		c.fd = -1
		raw := c.Conn
		if tc != nil {
			raw = tc.NetConn()
		}
		sc, ok := raw.(syscall.Conn)
		if !ok {
			return true
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		rc.Control(func(fd uintptr) { c.fd = int(fd) })
		if c.fd <= 0 {
			c.fd = -1
			return true
		}
	}
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK {
		return false
	}
	// A TLS connection may hold what the socket no longer does.
	return tc == nil || !c.tlsBuffered(tc)
}
