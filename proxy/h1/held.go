package h1

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"

	"github.com/vipswap/vipswap/proxy/rawsock"
)

// NewTLSListener returns a listener whose connections are TLS connections
// over inner's, as tls.NewListener's are, with the socket beneath each one
// able to hold what TLS writes: the Server then sends the end of an answer
// inside the poller's wait for the next request, as it does on cleartext
// connections (see sendAndAwait and heldConn), and spares the read that
// would find nothing. A connection that is not a TCP socket (one behind the
// PROXY protocol) is served as tls.NewListener's.
func NewTLSListener(inner net.Listener, config *tls.Config) net.Listener {
	return &tlsListener{Listener: inner, config: config}
}

type tlsListener struct {
	net.Listener
	config *tls.Config
}

// Accept accepts the next connection and wraps it in TLS.
func (l *tlsListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			h := &heldConn{TCPConn: tc, rc: rc}
			if rawsock.Supported {
				h.sock = rawsock.New(rc, tc)
			}
			h.await = h.awaitStep
			nc = h
		}
	}
	return tls.Server(nc, l.config), nil
}

// heldConn is the socket beneath a TLS connection. While its conn holds it
// (sendAndAwaitTLS), what TLS writes is kept instead of sent; the next Read
// sends it from inside the poller's wait (RawConn.Read), after the poller
// has forgotten earlier readiness, and then waits without a read for the
// client's next bytes: the client sends its next request only once it has
// the answer, so a read right after the answer went out would find nothing.
// Kept bytes go out before anything written after them.
type heldConn struct {
	*net.TCPConn
	hold bool
	out  *[]byte // kept bytes (pooled), nil when none

	rc    syscall.RawConn // the socket's
	sock  *rawsock.IO     // reads and writes it where rawsock is Supported
	await func(uintptr) bool
	step  int
	werr  error       // the kept bytes' send failed
	sent  func() bool // called once they are out; true: do not wait (closing)
	waits int         // kept answers sent inside a wait (for tests)
	// began is set when a read brings bytes: cleared as the connection
	// waits for its next request, it tells that the request has begun to
	// arrive although TLS, its record not whole, shows none of it.
	began bool
}

// heldBufs holds the buffers of kept answers between answers: an idle
// connection keeps none.
var heldBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10+64); return &b }}

// Write keeps p while held; otherwise it sends what is kept, then p.
func (h *heldConn) Write(p []byte) (int, error) {
	if h.hold {
		if h.out == nil {
			h.out = heldBufs.Get().(*[]byte)
		}
		*h.out = append(*h.out, p...)
		return len(p), nil
	}
	if h.out != nil {
		if err := h.flush(); err != nil {
			return 0, err
		}
	}
	return h.write(p)
}

// write writes p to the socket.
func (h *heldConn) write(p []byte) (int, error) {
	if h.sock != nil {
		return h.sock.Write(p)
	}
	return h.TCPConn.Write(p)
}

// Read sends what is kept inside the wait for the next bytes (see
// heldConn), then reads them.
func (h *heldConn) Read(p []byte) (int, error) {
	if h.out != nil {
		h.step, h.werr = 0, nil
		err := h.rc.Read(h.await)
		if h.werr != nil {
			return 0, h.werr
		}
		if err != nil {
			return 0, err // a deadline or a close before or during the wait
		}
	}
	var n int
	var err error
	if h.sock != nil {
		n, err = h.sock.Read(p)
	} else {
		n, err = h.TCPConn.Read(p)
	}
	if n > 0 {
		h.began = true
	}
	return n, err
}

// awaitStep is Read's callback: the first call sends the kept bytes and
// asks the poller to wait (unless the send failed, or sent says not to);
// the next says readable.
func (h *heldConn) awaitStep(uintptr) bool {
	if h.step > 0 {
		return true
	}
	h.step = 1
	if h.werr = h.flush(); h.werr != nil {
		return true
	}
	h.waits++
	return h.sent == nil || h.sent()
}

// flush sends the kept bytes and gives their buffer back.
func (h *heldConn) flush() error {
	if h.out == nil {
		return nil
	}
	_, err := h.write(*h.out)
	h.drop()
	return err
}

// drop gives the kept bytes' buffer back, unsent.
func (h *heldConn) drop() {
	if h.out == nil {
		return
	}
	if cap(*h.out) <= 64<<10 {
		*h.out = (*h.out)[:0]
		heldBufs.Put(h.out)
	}
	h.out = nil
}

// pending reports whether bytes are kept.
func (h *heldConn) pending() bool { return h.out != nil }
