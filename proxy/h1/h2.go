package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/internal/writebehind"
)

// This file hands HTTP/2 connections to golang.org/x/net/http2: TLS ones
// that negotiated "h2" by ALPN, and cleartext ones that open with the
// client preface on a server with H2C. The connection stays the server's:
// it holds its slot under MaxConns and its count under MaxConnsPerClient
// until it closes, it is idle while it has no open stream (and may then be
// reclaimed at MaxConns, by a GOAWAY), and Shutdown sends it a GOAWAY and
// waits for its streams to finish.

// clientPreface is what an HTTP/2 client sends first (RFC 9113 3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// What one HTTP/2 connection may cost beyond its requests: the frames that
// make the server work without a request to show for it (RST_STREAM either
// way but a graceful one, PRIORITY, SETTINGS, PING but one after data the
// server sent, WINDOW_UPDATE beyond two for each DATA frame it sent, empty
// DATA or header fragments) spend a budget of
// h2GlitchBurst, refilled at h2GlitchRate a second. A connection that
// spends it all is closed: its own streams end, no other's.
const (
	h2GlitchBurst = 2000
	h2GlitchRate  = 200
)

// h2MaxWUCredit bounds the WINDOW_UPDATE frames a client may have in hand
// for data it was sent.
const h2MaxWUCredit = 10000

// h2ReclaimWait is how long a server at MaxConns waits for an HTTP/2
// connection it sent a GOAWAY to close before it reclaims another: x/net
// closes one a second after the GOAWAY, if its client has not.
const h2ReclaimWait = 2 * time.Second

// h2MaxBlockFrames bounds the CONTINUATION frames of one header block,
// whatever their size: a block of more is a flood, not a header.
const h2MaxBlockFrames = 128

// HTTP/2 limits' defaults.
const (
	defaultH2Streams     = 100
	defaultH2StreamWin   = 256 << 10
	defaultH2ConnWin     = 1 << 20
	defaultH2ReadIdle    = 60 * time.Second
	defaultH2PingTimeout = 15 * time.Second
)

// errH2Flood closes a connection that spent its budget of frames that do
// no work, or sent a header block of too many frames.
var errH2Flood = errors.New("too many frames that do no work, or a header block of too many")

// States of an HTTP/2 connection (conn.state).
const (
	stateH2Busy int32 = 100 + iota // an HTTP/2 connection with open streams
	stateH2Idle                    // an HTTP/2 connection without open streams
)

// wantsH2 reports whether c, whose first bytes have arrived, speaks HTTP/2:
// a TLS connection that negotiated it, or, on an H2C server, a cleartext
// one whose first bytes are the client preface. A cleartext connection is
// given until ReadHeaderTimeout to send enough of them to tell.
func (c *conn) wantsH2() bool {
	if c.s.HTTP2 {
		if st := c.tlsState(); st != nil {
			return st.NegotiatedProtocol == http2.NextProtoTLS
		}
	}
	if !c.s.H2C || c.tlsState() != nil {
		return false
	}
	c.nc.SetReadDeadline(time.Now().Add(c.s.limits().ReadHeaderTimeout))
	for n := 1; ; n++ {
		b, err := c.br.Peek(n)
		if !bytes.HasPrefix([]byte(clientPreface), b) {
			return false
		}
		if len(b) == len(clientPreface) {
			return true
		}
		if err != nil {
			return false // HTTP/1.1's reader says what went wrong
		}
		n = len(b)
	}
}

// serveH2 serves c, whose first bytes arrived, as HTTP/2 until it closes.
func (c *conn) serveH2() {
	buffered, _ := c.br.Peek(c.br.Buffered())
	// What x/net writes is sent from a goroutine of the connection's own,
	// so that the answers of streams that end during a send leave with
	// the next one (see writebehind).
	hc := &h2conn{Conn: writebehind.New(c.nc, c.s.limits().WriteTimeout), c: c, pre: bytes.Clone(buffered),
		tokens: h2GlitchBurst, refilled: time.Now(), in: frameScanner{skip: len(clientPreface)}}
	c.release() // the HTTP/1.1 buffers: x/net has its own
	c.state.Store(stateH2Busy)
	c.nc.SetDeadline(time.Time{})
	var nc net.Conn = hc
	hc.src = hc.Conn
	if c.tlsState() != nil {
		nc = &h2tlsConn{hc}
	} else {
		// x/net reads each frame's header, then its payload, straight
		// from the connection: in cleartext, a system call each (TLS
		// reads a whole record at once and hands it out from there).
		hc.src = bufio.NewReaderSize(hc.Conn, 4<<10)
	}
	lim := c.s.limits()
	hs := &http.Server{
		MaxHeaderBytes: lim.MaxHeaderBytes,
		IdleTimeout:    lim.IdleTimeout,
		ConnState:      func(_ net.Conn, st http.ConnState) { c.h2State(st) },
		ErrorLog:       log.New(&h2log{s: c.s}, "", 0),
	}
	//lint:ignore SA1019 net/http serves HTTP/2 only from its own accept loop; a connection h1 accepted is handed over with x/net's ServeConn
	h2 := &http2.Server{
		MaxConcurrentStreams:         uint32(lim.H2MaxConcurrentStreams),
		MaxUploadBufferPerStream:     int32(lim.H2StreamWindow),
		MaxUploadBufferPerConnection: int32(lim.H2ConnWindow),
		IdleTimeout:                  lim.IdleTimeout,
		ReadIdleTimeout:              lim.H2ReadIdleTimeout,
		PingTimeout:                  lim.H2PingTimeout,
		WriteByteTimeout:             lim.WriteTimeout,
		// The smallest frames HTTP/2 allows (and its default): a client
		// cannot make the server hold a megabyte to read one frame.
		MaxReadFrameSize: 16 << 10,
	}
	//lint:ignore SA1019 as above: ConfigureServer gives ServeConn a GOAWAY on hs.Shutdown
	if err := http2.ConfigureServer(hs, h2); err != nil {
		c.close()
		return
	}
	c.h2 = hs
	//lint:ignore SA1019 as above
	h2.ServeConn(nc, &http2.ServeConnOpts{Handler: &h2Handler{c: c}, BaseConfig: hs})
	if c.state.Load() == stateReclaimed {
		c.s.h2Pending.Add(-1)
	}
	c.close()
}

// h2State follows an HTTP/2 connection between busy (open streams) and
// idle (none), as x/net reports it. The first report comes once the
// connection is registered for a GOAWAY: from then on, Shutdown and a
// reclaim may send it one.
func (c *conn) h2State(st http.ConnState) {
	switch st {
	case http.StateActive:
		c.state.CompareAndSwap(stateH2Idle, stateH2Busy)
	case http.StateIdle:
		c.idleSince.Store(clock.Nanos())
		c.kept.Store(true)
		c.state.CompareAndSwap(stateH2Busy, stateH2Idle)
	}
	c.h2ready.Store(true)
	if c.s.closing.Load() || c.state.Load() == stateReclaimed {
		c.goAway()
	}
}

// goAway sends an HTTP/2 connection a GOAWAY, once: it takes no new
// stream, ends those open and then closes.
func (c *conn) goAway() {
	if !c.h2ready.Load() || c.wentAway.Swap(true) {
		return // not HTTP/2 (yet), or told already
	}
	go c.h2.Shutdown(context.Background()) // it has no listener: it returns once the GOAWAY is on its way
}

// h2log passes x/net's messages to the server's ErrorLog, at most one a
// second: a hostile client must not fill the log.
type h2log struct {
	s    *Server
	last everySecond
}

func (l *h2log) Write(p []byte) (int, error) {
	if l.s.ErrorLog != nil && l.last.due() {
		l.s.ErrorLog(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// h2conn is an HTTP/2 connection as x/net sees it: it first reads what
// the HTTP/1.1 reader had buffered, and it watches the frames both ways
// for floods (see h2GlitchBurst) and for header blocks that never end.
type h2conn struct {
	net.Conn
	c   *conn
	pre []byte // read before the connection, bytes already received
	// src is what the frames are read from after pre: the connection, or
	// in cleartext a buffer in front of it.
	src io.Reader

	in       frameScanner // the reader's (x/net reads from one goroutine)
	tokens   float64      // the glitch budget left (the reader's)
	refilled time.Time
	block    int         // frames of the header block being read; 0 outside one
	dataSent atomic.Bool // the server sent DATA since the client's last PING
	// wuCredit counts the WINDOW_UPDATE frames the DATA the server sent
	// entitles the client to: two a frame (the connection's window and
	// the stream's), up to h2MaxWUCredit.
	wuCredit atomic.Int64
	// spendLater counts the streams the server reset for the client's
	// fault, charged to its budget at its next frame.
	spendLater atomic.Int32

	outMu sync.Mutex
	out   frameScanner
}

// h2tlsConn is an h2conn over TLS: x/net reads the TLS state through
// ConnectionState, and gives it to requests as r.TLS.
type h2tlsConn struct{ *h2conn }

// ConnectionState returns the TLS connection's state.
func (t *h2tlsConn) ConnectionState() tls.ConnectionState { return *t.c.tlsState() }

func (hc *h2conn) Read(p []byte) (int, error) {
	var n int
	var err error
	if len(hc.pre) > 0 {
		n = copy(p, hc.pre)
		hc.pre = hc.pre[n:]
	} else {
		n, err = hc.src.Read(p)
	}
	if n > 0 {
		if ferr := hc.in.scan(p[:n], hc.inbound); ferr != nil {
			hc.c.nc.Close() // at once: nothing more is sent to a flood
			hc.c.s.flooded(hc.c, ferr)
			return 0, ferr
		}
	}
	return n, err
}

// flooded counts an HTTP/2 connection closed for flooding, and says so
// (at most once a second).
func (s *Server) flooded(c *conn, err error) {
	n := s.floods.Add(1)
	if s.Notice != nil && s.floodLog.due() {
		s.Notice(fmt.Sprintf("h1: closed the HTTP/2 connection of %s: %v (%d so far)", c.remote, err, n))
	}
}

// Floods returns how many HTTP/2 connections the server closed for
// flooding it with frames that do no work, or with a header block that
// does not end.
func (s *Server) Floods() uint64 { return s.floods.Load() }

func (hc *h2conn) Write(p []byte) (int, error) {
	hc.outMu.Lock()
	hc.out.scan(p, hc.outbound)
	hc.outMu.Unlock()
	return hc.Conn.Write(p)
}

// HTTP/2 frame types and flags (RFC 9113 6).
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePing         = 0x6
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
)

// inbound weighs a frame the client sent.
func (hc *h2conn) inbound(f *frameHead) error {
	glitch := false
	switch f.typ {
	case frameData:
		glitch = f.length == 0 && f.flags&flagEndStream == 0
	case frameHeaders, frameContinuation:
		if f.typ == frameHeaders {
			hc.block = 0
		}
		if f.flags&flagEndHeaders == 0 {
			if hc.block == 0 {
				// The rest of the block is due within ReadHeaderTimeout,
				// as an HTTP/1.1 head is.
				hc.Conn.SetReadDeadline(time.Now().Add(hc.c.s.limits().ReadHeaderTimeout))
			}
			hc.block++
			if hc.block > h2MaxBlockFrames {
				return errH2Flood
			}
		} else if hc.block > 0 {
			hc.block = 0
			hc.Conn.SetReadDeadline(time.Time{})
		}
		glitch = f.length == 0 && f.flags&flagEndHeaders == 0
	case framePriority, frameRSTStream:
		glitch = true
	case frameSettings:
		glitch = f.flags&flagAck == 0
	case framePing:
		// A client may ping whenever it got data (to measure the link);
		// pings in a row without data between cost.
		glitch = f.flags&flagAck == 0 && !hc.dataSent.Swap(false)
	case frameWindowUpdate:
		// A window opens for data the server sent: updates beyond two
		// a DATA frame cost.
		glitch = hc.wuCredit.Add(-1) < 0
		if glitch {
			hc.wuCredit.Store(0)
		}
	}
	cost := hc.spendLater.Swap(0)
	if glitch {
		cost++
	}
	if cost > 0 && !hc.spend(cost) {
		return errH2Flood
	}
	return nil
}

// outbound weighs a frame the server sent: a stream it reset (refused
// beyond the stream limit, or for the client's error) costs the client as
// one it reset itself.
func (hc *h2conn) outbound(f *frameHead) error {
	switch f.typ {
	case frameData:
		if f.length > 0 {
			hc.dataSent.Store(true)
			if hc.wuCredit.Add(2) > h2MaxWUCredit {
				hc.wuCredit.Store(h2MaxWUCredit)
			}
		}
	case frameRSTStream:
		// Not NO_ERROR, CANCEL or INTERNAL_ERROR: the server's own
		// reasons (a handler that aborted, a write that timed out).
		if c := http2.ErrCode(f.code); c != http2.ErrCodeNo && c != http2.ErrCodeCancel && c != http2.ErrCodeInternal {
			hc.spendLater.Add(1)
		}
	}
	return nil
}

// spend takes cost from the connection's glitch budget, and reports false
// when there is not enough left.
func (hc *h2conn) spend(cost int32) bool {
	now := time.Now()
	hc.tokens = min(hc.tokens+now.Sub(hc.refilled).Seconds()*h2GlitchRate, h2GlitchBurst)
	hc.refilled = now
	hc.tokens -= float64(cost)
	return hc.tokens >= 0
}

// frameHead is what frameScanner reads of a frame: its header, and the
// error code of a RST_STREAM.
type frameHead struct {
	length uint32
	typ    byte
	flags  byte
	code   uint32
}

// frameScanner follows the frames of one direction of an HTTP/2
// connection through the bytes as they pass, without holding them: it
// skips the client preface, reads each frame header (9 bytes) and skips
// the payload (but for a RST_STREAM's error code).
type frameScanner struct {
	skip    int // bytes of the client preface left to skip
	head    [9]byte
	nhead   int
	payload uint32 // bytes of the current payload left
	f       frameHead
	ncode   int // bytes of the error code read
}

func (s *frameScanner) scan(p []byte, onFrame func(*frameHead) error) error {
	for len(p) > 0 {
		if s.skip > 0 {
			n := min(s.skip, len(p))
			s.skip -= n
			p = p[n:]
			continue
		}
		if s.payload > 0 {
			n := int(min(s.payload, uint32(len(p))))
			if s.f.typ == frameRSTStream && s.ncode < 4 {
				for _, b := range p[:min(n, 4-s.ncode)] {
					s.f.code = s.f.code<<8 | uint32(b)
					s.ncode++
				}
				if s.ncode == 4 {
					if err := onFrame(&s.f); err != nil {
						return err
					}
				}
			}
			s.payload -= uint32(n)
			p = p[n:]
			continue
		}
		n := copy(s.head[s.nhead:], p)
		s.nhead += n
		p = p[n:]
		if s.nhead < len(s.head) {
			return nil
		}
		s.nhead = 0
		s.f = frameHead{
			length: uint32(s.head[0])<<16 | uint32(s.head[1])<<8 | uint32(s.head[2]),
			typ:    s.head[3],
			flags:  s.head[4],
		}
		s.payload, s.ncode = s.f.length, 0
		if s.f.typ == frameRSTStream && s.f.length == 4 {
			continue // reported once its error code is read
		}
		if err := onFrame(&s.f); err != nil {
			return err
		}
	}
	return nil
}

// h2Handler runs the server's Handler for each HTTP/2 stream, with the
// promises HTTP/1.1 requests have: each piece of the body is due within
// BodyReadTimeout (else the read fails with a *BodyError), each write to
// the client may block at most WriteTimeout (else the stream is reset),
// and the ResponseWriter can Discard a response none of which was sent.
type h2Handler struct{ c *conn }

func (h *h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Context().Err() != nil {
		return // reset by the client before it started: nothing to do
	}
	lim := h.c.s.limits()
	// What the HTTP/1.1 reader refuses, refused alike: CONNECT (and so
	// WebSockets over HTTP/2, RFC 8441's extended CONNECT, which x/net
	// offers), and more header fields than MaxHeaderFields.
	if r.Method == http.MethodConnect {
		h.refuse(w, &requestError{http.StatusNotImplemented, "CONNECT is not supported"})
		return
	}
	// x/net leaves :method and :path to the server: they must be what a
	// request line may carry (a token; a target without spaces or
	// controls, * for OPTIONS only), as the HTTP/1.1 reader demands, since
	// the proxy writes them into the request line to an HTTP/1.1
	// instance, where a space would forge another target.
	if !isToken([]byte(r.Method)) {
		h.refuse(w, &requestError{http.StatusBadRequest, "malformed method"})
		return
	}
	var u url.URL
	if _, _, err := parseTarget(r.Method, r.RequestURI, &u); err != nil {
		h.refuse(w, err.(*requestError))
		return
	}
	fields := 0
	for _, vv := range r.Header {
		fields += len(vv)
	}
	if fields > lim.MaxHeaderFields {
		h.refuse(w, errTooManyFields)
		return
	}
	// The controller lives in the writer: one allocation less a stream.
	rw := &h2Writer{w: w, ctl: *http.NewResponseController(w), timeout: lim.WriteTimeout}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &h2Body{rc: r.Body, ctl: &rw.ctl, timeout: lim.BodyReadTimeout}
	}
	h.c.s.Handler.ServeHTTP(rw, r)
	rw.commit() // a response without body bytes: its head (and trailers)
}

// refuse answers a stream the server will not hand to the Handler, as
// the HTTP/1.1 server answers a request it could not read.
func (h *h2Handler) refuse(w http.ResponseWriter, re *requestError) {
	if h.c.s.BadRequest != nil {
		h.c.s.BadRequest(re.status)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(re.status)
	io.WriteString(w, re.msg+"\n")
}

// h2Body is an HTTP/2 request body, read under BodyReadTimeout.
type h2Body struct {
	rc       io.ReadCloser
	ctl      *http.ResponseController
	timeout  time.Duration
	deadline int64
}

func (b *h2Body) Read(p []byte) (int, error) {
	b.deadline = clock.Refresh(func(t time.Time) error { return b.ctl.SetReadDeadline(t) }, b.deadline, b.timeout)
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = bodyError(err)
	}
	return n, err
}

func (b *h2Body) Close() error { return b.rc.Close() }

// h2Writer is an HTTP/2 stream's ResponseWriter: it holds the status back
// until the first byte of body (or a Flush, or the handler's end), so a
// response can still be discarded, and bounds each write.
type h2Writer struct {
	w         http.ResponseWriter
	ctl       http.ResponseController
	timeout   time.Duration
	deadline  int64
	status    int  // held back, 0 for none
	committed bool // the status went to x/net
}

func (w *h2Writer) Header() http.Header { return w.w.Header() }

func (w *h2Writer) WriteHeader(code int) {
	if w.committed || w.status != 0 {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.w.WriteHeader(code) // informational: goes at once
		return
	}
	w.status = code
}

func (w *h2Writer) commit() {
	if w.committed {
		return
	}
	w.committed = true
	if w.status == 0 {
		w.status = http.StatusOK
	}
	// Connection: close ends an HTTP/1.1 connection after a refusal; an
	// HTTP/2 stream's refusal is its own, and x/net would read it as a
	// GOAWAY for every stream of the connection.
	h := w.w.Header()
	delete(h, "Connection")
	if _, ok := h["Date"]; !ok {
		// x/net would format the time for every response that has none
		// (5% of the CPU of a gRPC call, whose instances send none).
		h["Date"] = dateField()
	}
	w.w.WriteHeader(w.status)
}

// dateField returns the Date field's value for the current second, as a
// slice its callers share and must not change. It is formatted once a
// second rather than once a response. The second is the wall clock's
// (time.Now), as x/net's was: a date shown follows the system's clock
// when it is set, where clock's readings keep the one at start (a host
// whose clock is set after vipswap started, at boot or after a suspend,
// would send the wrong time in every answer).
func dateField() []string {
	sec := time.Now().Unix()
	if d := lastDate.Load(); d != nil && d.sec == sec {
		return d.value
	}
	v := time.Unix(sec, 0).UTC().Format(http.TimeFormat)
	d := &httpDate{sec: sec, value: []string{v}[:1:1]} // an Add appends to a copy
	lastDate.Store(d)
	return d.value
}

// httpDate is a Date field's value and the second it names.
type httpDate struct {
	sec   int64
	value []string
}

var lastDate atomic.Pointer[httpDate]

func (w *h2Writer) Write(p []byte) (int, error) {
	w.commit()
	w.deadline = clock.Refresh(func(t time.Time) error { return w.ctl.SetWriteDeadline(t) }, w.deadline, w.timeout)
	return w.w.Write(p)
}

// Flush sends what was written.
func (w *h2Writer) Flush() {
	w.commit()
	w.deadline = clock.Refresh(func(t time.Time) error { return w.ctl.SetWriteDeadline(t) }, w.deadline, w.timeout)
	w.ctl.Flush()
}

// Discard drops the response if none of it was sent yet (its header
// included) and reports whether it did: the handler may then answer
// afresh.
func (w *h2Writer) Discard() bool {
	if w.committed {
		return false
	}
	w.status = 0
	clear(w.w.Header())
	return true
}

// Unwrap returns x/net's ResponseWriter, for http.ResponseController.
func (w *h2Writer) Unwrap() http.ResponseWriter { return w.w }
