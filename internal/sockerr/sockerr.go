// Package sockerr classifies socket errors the way vipswap decides on
// them: whether the peer took too long, and whether vipswap itself ran out
// of what a socket needs (descriptors, memory, ports), which says nothing
// about the peer.
package sockerr

import (
	"errors"
	"net"
	"syscall"
)

// Timeout reports whether err is a deadline or timeout.
func Timeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// LocalShortage reports whether a socket operation failed for want of
// vipswap's own resources rather than the peer's doing.
func LocalShortage(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
