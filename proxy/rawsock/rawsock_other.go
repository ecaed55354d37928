//go:build !linux

package rawsock

import (
	"errors"
	"net"
	"syscall"
)

// Supported reports whether IO can be used on this system.
const Supported = false

// IO is not used on this system (Supported is false): its calls fail.
type IO struct{}

// New returns an IO that is not used on this system.
func New(syscall.RawConn, net.Conn) *IO { return &IO{} }

// Reset does nothing on this system.
func (s *IO) Reset(syscall.RawConn, net.Conn) {}

// Read fails with errors.ErrUnsupported on this system.
func (s *IO) Read([]byte) (int, error) { return 0, errors.ErrUnsupported }

// ReadBeyond fails with errors.ErrUnsupported on this system.
func (s *IO) ReadBeyond([]byte, []byte) (int, int, error) { return 0, 0, errors.ErrUnsupported }

// Write fails with errors.ErrUnsupported on this system.
func (s *IO) Write([]byte) (int, error) { return 0, errors.ErrUnsupported }

// Writev fails with errors.ErrUnsupported on this system.
func (s *IO) Writev([][]byte) (int64, error) { return 0, errors.ErrUnsupported }
