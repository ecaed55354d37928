//go:build linux

package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"unsafe"
)

// Supported reports whether IO can be used on this system.
const Supported = true

// maxIovecs is how many buffers one writev takes.
const maxIovecs = 16

// IO reads and writes one socket through its RawConn, keeping its
// deadlines and its close as net.Conn's Read and Write do. One Read and one
// Write may run at once, as on a net.Conn; an IO is used by one connection
// at a time (Reset binds it to another).
type IO struct {
	rc     syscall.RawConn
	conn   net.Conn // the connection of the socket, for its addresses in errors
	read   func(uintptr) bool
	writev func(uintptr) bool

	rp         []byte
	rn         int
	rerr, werr syscall.Errno

	// ReadBeyond's: what lies beyond rp, how much of it a read filled,
	// and the readv's two buffers.
	beyond   []byte
	bn       int
	riov     [2]syscall.Iovec
	readBoth func(uintptr) bool

	one [1][]byte // Write's buffer, as writeAll's
	wv  [][]byte  // what writeAll has still to write, whole buffers
	iov [maxIovecs]syscall.Iovec
	iou int // how many of iov a write filled, to clear after it
	wvn int64
}

// New returns an IO on rc, the socket of conn (nil: bind it later with
// Reset). conn names the addresses in errors, as net.Conn's do.
func New(rc syscall.RawConn, conn net.Conn) *IO {
	s := &IO{rc: rc, conn: conn}
	s.read, s.writev, s.readBoth = s.readStep, s.writevStep, s.readvStep
	return s
}

// Reset binds s to rc, the socket of conn (nil: to none).
func (s *IO) Reset(rc syscall.RawConn, conn net.Conn) { s.rc, s.conn = rc, conn }

// fail returns the error of a read or write (op), as net.Conn's: a
// *net.OpError naming op and the connection's addresses, around the
// poller's error (a deadline passed, a close) or an *os.SyscallError.
func (s *IO) fail(op string, err error, errno syscall.Errno) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		oe.Op = strings.TrimPrefix(oe.Op, "raw-") // RawConn's "raw-read" is a read
		return err
	}
	if err == nil {
		err = os.NewSyscallError(op, errno)
	}
	oe = &net.OpError{Op: op, Net: "tcp", Err: err}
	if s.conn != nil {
		oe.Source, oe.Addr = s.conn.LocalAddr(), s.conn.RemoteAddr()
	}
	return oe
}

// Read reads into p, as net.Conn's Read: io.EOF at the end, the poller's
// errors for a deadline passed or a closed connection, an *os.SyscallError
// for the system's.
func (s *IO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rp, s.rn, s.rerr = p, 0, 0
	err := s.rc.Read(s.read)
	s.rp = nil
	switch {
	case err != nil:
		return 0, s.fail("read", err, 0)
	case s.rerr != 0:
		return 0, s.fail("read", nil, s.rerr)
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

func (s *IO) readStep(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rp[0])), uintptr(len(s.rp)))
		switch e {
		case 0:
			s.rn = int(n)
			raceRead(fd, s.rp[:n])
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.rerr = e
			return true
		}
	}
}

// ReadBeyond reads as Read does into p and, once p is full, on into
// beyond, in one system call (readv): n bytes went into p, m into beyond.
// A reader that must read exactly to a boundary (the end of a chunk of a
// chunked body) gets what follows it (the next chunk's size line, the end
// of the body) in the same call, rather than in a read of its own.
func (s *IO) ReadBeyond(p, beyond []byte) (n, m int, err error) {
	if len(beyond) == 0 {
		n, err = s.Read(p)
		return n, 0, err
	}
	if len(p) == 0 {
		return 0, 0, nil
	}
	s.rp, s.beyond, s.rn, s.bn, s.rerr = p, beyond, 0, 0, 0
	err = s.rc.Read(s.readBoth)
	s.rp, s.beyond = nil, nil
	s.riov = [2]syscall.Iovec{} // no pointer into a buffer outlives the read
	switch {
	case err != nil:
		return 0, 0, s.fail("read", err, 0)
	case s.rerr != 0:
		return 0, 0, s.fail("read", nil, s.rerr)
	case s.rn == 0:
		return 0, 0, io.EOF
	}
	return s.rn, s.bn, nil
}

func (s *IO) readvStep(fd uintptr) bool {
	s.riov[0].Base, s.riov[1].Base = &s.rp[0], &s.beyond[0]
	s.riov[0].SetLen(len(s.rp))
	s.riov[1].SetLen(len(s.beyond))
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READV, fd, uintptr(unsafe.Pointer(&s.riov[0])), 2)
		switch e {
		case 0:
			s.rn = min(int(n), len(s.rp))
			s.bn = int(n) - s.rn
			raceRead(fd, s.rp[:s.rn])
			raceRead(fd, s.beyond[:s.bn])
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.rerr = e
			return true
		}
	}
}

// Write writes p whole, as net.Conn's Write: it returns how much was
// written, and an error when that is not all of it.
func (s *IO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.one[0] = p
	n, err := s.writeAll(s.one[:], "write")
	s.one[0] = nil
	return int(n), err
}

// Writev writes the buffers whole, in order, with as few system calls as
// they take (writev, maxIovecs buffers at a time), as net.Buffers' WriteTo
// does on a net.Conn. It returns how many bytes were written.
func (s *IO) Writev(bufs [][]byte) (int64, error) { return s.writeAll(bufs, "writev") }

// writeAll writes bufs whole; op names the call in an error.
func (s *IO) writeAll(bufs [][]byte, op string) (int64, error) {
	s.wv, s.wvn, s.werr = bufs, 0, 0
	err := s.rc.Write(s.writev)
	n := s.wvn
	s.wv = nil
	clear(s.iov[:s.iou]) // no pointer into a buffer outlives the write
	s.iou = 0
	switch {
	case s.werr != 0:
		return n, s.fail(op, nil, s.werr)
	case err != nil:
		return n, s.fail(op, err, 0)
	}
	return n, nil
}

func (s *IO) writevStep(fd uintptr) bool {
	for {
		for len(s.wv) > 0 && len(s.wv[0]) == 0 {
			s.wv = s.wv[1:]
		}
		if len(s.wv) == 0 {
			return true
		}
		k := 0
		for _, b := range s.wv {
			if k == maxIovecs {
				break
			}
			if len(b) > 0 {
				s.iov[k].Base = &b[0]
				s.iov[k].SetLen(len(b))
				k++
			}
		}
		s.iou = max(s.iou, k)
		raceReleaseIO()
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iov[0])), uintptr(k))
		switch e {
		case 0:
			s.wvn += int64(n)
			s.consume(int(n))
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werr = e
			return true
		}
	}
}

// consume drops n written bytes from the front of s.wv.
func (s *IO) consume(n int) {
	for n > 0 && len(s.wv) > 0 {
		if n < len(s.wv[0]) {
			raceReadRange(s.wv[0][:n])
			s.wv[0] = s.wv[0][n:]
			return
		}
		raceReadRange(s.wv[0])
		n -= len(s.wv[0])
		s.wv = s.wv[1:]
	}
}
