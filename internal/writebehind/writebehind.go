// Package writebehind sends what is written to a connection from a
// goroutine of its own, so that what is written while a send is on its way
// leaves with the next send, in one write.
//
// An HTTP/2 implementation (golang.org/x/net/http2, both its server and its
// client) flushes whenever its queue of frames runs empty, which with many
// streams open is about once per answer or request: a TLS record and a
// system call each, where an event loop sends all that is ready in one.
// Here Write copies the bytes and returns; a goroutine sends while there
// are bytes to send. Nothing waits on purpose: the first bytes leave as
// soon as the sending goroutine runs, and under load the sends grow.
//
// A send goes 16 KiB at a time, each piece due within the connection's
// timeout: a client that reads slowly, but reads, is kept. A send that fails
// closes the connection (its reader sees the failure at once), and every
// later Write returns its error. Close sends what is left, within the
// timeout, before it closes.
package writebehind

import (
	"net"
	"sync"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
)

// Conn is a connection whose writes are sent from a goroutine of its own.
// Reads, and the read deadline, are the connection's.
type Conn struct {
	net.Conn
	timeout time.Duration

	mu       sync.Mutex
	sent     sync.Cond // a send began or ended
	pending  []byte    // written, not yet sent
	spare    []byte    // the buffer of the send before, for the next
	sending  bool      // a goroutine sends
	err      error     // the error of the first send that failed
	deadline int64     // the write deadline in force (a clock.Nanos reading)
	closeBy  int64     // when Close gives up on the bytes left (a clock.Nanos reading), 0 before Close
}

// MaxPending is what Write holds unsent, beside the send on its way,
// before it waits.
const MaxPending = 64 << 10

// bufs holds the buffers of connections with nothing to send: an idle
// connection holds none.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// New returns nc with its writes sent from a goroutine of its own, each
// send's every 16 KiB due within timeout (which must be positive).
func New(nc net.Conn, timeout time.Duration) *Conn {
	c := &Conn{Conn: nc, timeout: timeout}
	c.sent.L = &c.mu
	return c
}

// Write queues p to be sent and returns; it waits only while MaxPending
// bytes wait behind a send.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.pending) >= MaxPending {
		c.sent.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.pending == nil {
		c.pending = (*bufs.Get().(*[]byte))[:0]
	}
	c.pending = append(c.pending, p...)
	if !c.sending {
		c.sending = true
		go c.send()
	}
	return len(p), nil
}

// send sends what was written until nothing is left, or a send fails.
func (c *Conn) send() {
	c.mu.Lock()
	for c.err == nil && len(c.pending) > 0 {
		out := c.pending
		c.pending, c.spare = c.spare[:0], nil
		c.sent.Broadcast() // room again for a Write waiting at MaxPending
		c.mu.Unlock()
		err := c.write(out)
		if err != nil {
			c.closeNow()
		}
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
		}
		if cap(out) <= 2*MaxPending {
			c.spare = out[:0]
		}
	}
	// Nothing to send: the buffers go back to the pool.
	for _, b := range [][]byte{c.pending, c.spare} {
		if b != nil && cap(b) <= 2*MaxPending {
			b = b[:0]
			bufs.Put(&b)
		}
	}
	c.pending, c.spare = nil, nil
	c.sending = false
	c.sent.Broadcast()
	c.mu.Unlock()
}

// sendPiece is the most a send writes under one deadline.
const sendPiece = 16 << 10

// write sends out sendPiece bytes at a time, each piece due within the
// timeout (see setDeadline): a client that reads slowly, but reads a
// piece within the timeout, is kept, as when each of x/net's writes (a
// frame at most) had a deadline of its own. Pieces of 16 KiB keep the
// answers that a send joins together (most far smaller) and cost no
// system call more over TLS, which writes a record of 16 KiB at most per
// call anyway.
func (c *Conn) write(out []byte) error {
	for len(out) > 0 {
		piece := out[:min(len(out), sendPiece)]
		c.mu.Lock()
		c.setDeadline()
		c.mu.Unlock()
		if _, err := c.Conn.Write(piece); err != nil {
			return err
		}
		out = out[len(piece):]
	}
	return nil
}

// Abort closes the connection at once, for a connection that must end
// now: a send on its way fails, what is unsent is dropped, and every
// later Write fails. (Close sends what is left first, for up to the
// timeout; a caller that closes to break off, as x/net's ClientConn.Close
// does, would wait on a peer that reads nothing.)
func (c *Conn) Abort() {
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.sent.Broadcast()
	c.mu.Unlock()
	c.closeNow()
}

// closeNow closes the connection without a word more: over TLS, the
// connection under it. tls.Conn's Close first writes a close_notify
// alert, which a peer that reads nothing holds up for 5 s more, and
// which after a send that failed part-way through a record is garbage.
func (c *Conn) closeNow() error {
	if tc, ok := c.Conn.(interface{ NetConn() net.Conn }); ok {
		if nc := tc.NetConn(); nc != nil {
			return nc.Close()
		}
	}
	return c.Conn.Close()
}

// setDeadline gives the next send its write deadline: the timeout from
// now (moved only once a quarter of it has passed, see clock.Refresh), or
// Close's, if that comes first. It is called with mu held.
func (c *Conn) setDeadline() {
	if c.closeBy != 0 {
		if c.deadline != c.closeBy {
			c.deadline = c.closeBy
			c.Conn.SetWriteDeadline(clock.At(c.closeBy))
		}
		return
	}
	c.deadline = clock.Refresh(c.Conn.SetWriteDeadline, c.deadline, c.timeout)
}

// SetWriteDeadline does nothing: each send has its own deadline (a
// deadline set around a Write, which returns at once, would bound
// nothing).
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline sets the read deadline; see SetWriteDeadline.
func (c *Conn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// Close waits until what was written has been sent, or a send failed, for
// at most the timeout, then closes the connection (after a failed send,
// without a close_notify: see closeNow).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closeBy == 0 {
		// The sends after the one on its way are due by then; that one
		// keeps its own deadline, which is earlier (set at most the
		// timeout from its start, before now).
		c.closeBy = clock.Nanos() + int64(c.timeout)
	}
	for c.sending {
		c.sent.Wait()
	}
	failed := c.err != nil
	c.mu.Unlock()
	if failed {
		return c.closeNow()
	}
	return c.Conn.Close()
}
