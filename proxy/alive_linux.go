package proxy

import "syscall"

// alive reports whether the instance has not closed c while it sat idle. It
// peeks at the socket without blocking: "would block" means open and quiet;
// end of file (the instance closed it) or unexpected bytes mean not usable.
// A read with an expired deadline would not do: Go's poller reports the
// timeout before it reads.
func (c *upstreamConn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return open
}
