package h1

import (
	"net"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/proxy/rawsock"
)

// writer buffers what a connection sends, like a bufio.Writer, but sends
// its buffered bytes and a large piece of body together in one writev: a
// response head and the first body bytes, then a piece too large for the
// buffer, cost one syscall rather than two.
//
// Each write to the connection may block for at most timeout (a client that
// stops reading): the write deadline moves along as writes succeed.
type writer struct {
	buf      []byte // the buffered bytes; cap is the buffer's size
	nc       net.Conn
	sock     *rawsock.IO // nc's socket, written raw when set
	err      error       // sticky, like bufio.Writer's
	timeout  time.Duration
	deadline int64 // the write deadline set last (a clock.Nanos reading)
	sent     int64 // bytes handed to the connection since reset

	vec       [4][]byte // writeParts' buffers, without an allocation
	chunkHead [18]byte  // a chunk's size line (response.writeBody)
}

func newWriter(size int) *writer { return &writer{buf: make([]byte, 0, size)} }

func (w *writer) reset(nc net.Conn, sock *rawsock.IO, timeout time.Duration) {
	w.buf, w.nc, w.sock, w.err, w.timeout, w.deadline, w.sent = w.buf[:0], nc, sock, nil, timeout, 0, 0
}

// arm moves the write deadline along before a write.
func (w *writer) arm() {
	if w.timeout > 0 {
		w.deadline = clock.Refresh(w.nc.SetWriteDeadline, w.deadline, w.timeout)
	}
}

// WriteString buffers s, sending what is buffered first when s does not fit.
func (w *writer) WriteString(s string) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(w.buf)+len(s) > cap(w.buf) {
		if w.Flush(); w.err != nil {
			return 0, w.err
		}
		if len(s) > cap(w.buf) {
			return w.send(net.Buffers{[]byte(s)})
		}
	}
	w.buf = append(w.buf, s...)
	return len(s), nil
}

// Write buffers p, or sends the buffer and p in one writev when p does not
// fit.
func (w *writer) Write(p []byte) (int, error) {
	return w.writeParts(p)
}

// writeParts writes the concatenation of parts: into the buffer when it
// fits, else with the buffered bytes in one writev.
func (w *writer) writeParts(parts ...[]byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if len(w.buf)+n <= cap(w.buf) {
		for _, p := range parts {
			w.buf = append(w.buf, p...)
		}
		return n, nil
	}
	bufs := w.vec[:0] // the writer's own, for a chunk's three parts and what is buffered
	if len(parts)+1 > len(w.vec) {
		bufs = make(net.Buffers, 0, len(parts)+1)
	}
	if len(w.buf) > 0 {
		bufs = append(bufs, w.buf)
	}
	bufs = append(bufs, parts...)
	_, err := w.send(bufs)
	clear(w.vec[:]) // keep no pointer into the caller's buffers
	if err != nil {
		return 0, err
	}
	w.buf = w.buf[:0]
	return n, nil
}

func (w *writer) send(bufs net.Buffers) (int, error) {
	w.arm()
	var n int64
	var err error
	if w.sock != nil {
		n, err = w.sock.Writev(bufs)
	} else {
		moved := bufs // WriteTo moves its receiver to the heap: this copy, not every send
		n, err = moved.WriteTo(w.nc)
	}
	w.sent += n
	if err != nil {
		w.err = err
	}
	return int(n), err
}

// Flush sends what is buffered.
func (w *writer) Flush() error {
	if w.err != nil || len(w.buf) == 0 {
		return w.err
	}
	w.arm()
	var n int
	var err error
	if w.sock != nil {
		n, err = w.sock.Write(w.buf)
	} else {
		n, err = w.nc.Write(w.buf)
	}
	w.sent += int64(n)
	if err != nil {
		w.err = err
		return err
	}
	w.buf = w.buf[:0]
	return nil
}
