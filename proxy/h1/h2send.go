package h1

import (
	"net"
	"sync"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
)

// h2sender sends what x/net writes to an HTTP/2 connection from a
// goroutine of its own, so that the answers of streams that end while a
// send is on its way leave together, in one write.
//
// x/net flushes its buffer whenever its queue of frames runs empty, which
// with many streams open is about once per answer: a TLS record and a
// system call each. Write here only copies the bytes; a goroutine sends
// while there are bytes to send, and what was written during one send
// leaves with the next. Nothing waits on purpose: the first bytes leave as
// soon as the sending goroutine runs.
//
// Each send is due within the server's WriteTimeout, as x/net's own writes
// were; a send that fails fails every later Write, and Close sends what is
// left (within that time) before it closes.
type h2sender struct {
	nc      net.Conn
	timeout time.Duration

	mu       sync.Mutex
	sent     sync.Cond // a send ended
	pending  []byte    // written, not yet sent
	spare    []byte    // the buffer of the send before, for the next
	sending  bool      // a goroutine sends
	err      error     // the error of the first send that failed
	deadline int64     // the write deadline in force (a clock.Nanos reading)
	closeBy  int64     // when Close gives up on the bytes left (a clock.Nanos reading), 0 before Close
}

// h2SendMax is what Write holds unsent before it waits for a send: the
// slowest client a send lets through reads this much within WriteTimeout.
const h2SendMax = 64 << 10

// h2SendBufs holds the buffers of senders with nothing to send: an idle
// HTTP/2 connection holds none.
var h2SendBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func newH2Sender(nc net.Conn, timeout time.Duration) *h2sender {
	s := &h2sender{nc: nc, timeout: timeout}
	s.sent.L = &s.mu
	return s
}

// Write queues p to be sent and returns; it waits only while h2SendMax
// bytes are unsent.
func (s *h2sender) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.err == nil && len(s.pending) >= h2SendMax {
		s.sent.Wait()
	}
	if s.err != nil {
		return 0, s.err
	}
	if s.pending == nil {
		s.pending = (*h2SendBufs.Get().(*[]byte))[:0]
	}
	s.pending = append(s.pending, p...)
	if !s.sending {
		s.sending = true
		go s.send()
	}
	return len(p), nil
}

// send sends what was written until nothing is left, or a send fails.
func (s *h2sender) send() {
	s.mu.Lock()
	for s.err == nil && len(s.pending) > 0 {
		out := s.pending
		s.pending = s.spare[:0]
		s.spare = nil
		s.setDeadline()
		s.sent.Broadcast() // room again for a Write waiting at h2SendMax
		s.mu.Unlock()
		_, err := s.nc.Write(out)
		s.mu.Lock()
		if err != nil {
			s.err = err
		}
		if cap(out) <= 2*h2SendMax {
			s.spare = out[:0]
		}
		s.sent.Broadcast()
	}
	// Nothing to send: the buffers go back to the pool.
	for _, b := range [][]byte{s.pending, s.spare} {
		if b != nil && cap(b) <= 2*h2SendMax {
			b = b[:0]
			h2SendBufs.Put(&b)
		}
	}
	s.pending, s.spare = nil, nil
	s.sending = false
	s.sent.Broadcast()
	s.mu.Unlock()
}

// setDeadline gives the next send the write deadline: WriteTimeout from
// now (moved only once a quarter of it has passed, see clock.Refresh), or
// Close's, if that comes first. It is called with mu held.
func (s *h2sender) setDeadline() {
	if s.closeBy != 0 {
		if s.deadline != s.closeBy {
			s.deadline = s.closeBy
			s.nc.SetWriteDeadline(clock.At(s.closeBy))
		}
		return
	}
	s.deadline = clock.Refresh(s.nc.SetWriteDeadline, s.deadline, s.timeout)
}

// Close waits until what was written has been sent, or a send failed, for
// at most WriteTimeout, then closes the connection.
func (s *h2sender) Close() error {
	s.mu.Lock()
	if s.closeBy == 0 {
		s.closeBy = clock.Nanos() + int64(s.timeout)
		if s.sending {
			// The send on its way may have a later deadline.
			s.deadline = s.closeBy
			s.nc.SetWriteDeadline(clock.At(s.closeBy))
		}
	}
	for s.sending {
		s.sent.Wait()
	}
	s.mu.Unlock()
	return s.nc.Close()
}
