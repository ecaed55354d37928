package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/proxy/proxyproto"
	"github.com/vipswap/vipswap/proxy/rawsock"
)

// parkAfter is how long a connection's goroutine waits for the next request
// before the connection is parked: handed to the poller without a goroutine
// or buffers until the client sends again.
const parkAfter = 100 * time.Millisecond

// maxDiscard bounds how much of an unread request body is read and dropped
// to keep a connection; a larger rest closes it.
const maxDiscard = 256 << 10

// Server serves HTTP/1.1 with a Handler. Set its fields before Serve.
type Server struct {
	// Handler answers every request.
	Handler http.Handler
	// ReadHeaderTimeout bounds how long a client may take to send a request
	// head once it has started (from its first byte), and a TLS
	// handshake once its client has begun it. Zero means 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a connection that waits this long for its next
	// request, or for its first: a client's pool may hold a connection it
	// dialed and has not used yet, and counts it as kept alive. Zero means
	// 120s.
	IdleTimeout time.Duration
	// BodyReadTimeout bounds the wait for each next piece of a request
	// body: a client that stops sending its body mid-way gets its read
	// failed with a *BodyError (status 408) after at least 3/4 of it and
	// at most all of it. Zero means 30s.
	BodyReadTimeout time.Duration
	// WriteTimeout bounds how long one write to the client may block (a
	// client that stops reading its answer). Zero means 30s.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request head. Zero means 64 KiB.
	MaxHeaderBytes int
	// MaxHeaderFields bounds how many header fields a request head may
	// have. Zero means 100.
	MaxHeaderFields int
	// MaxConns bounds how many client connections the server holds at
	// once, hijacked ones included. At the limit a new connection takes
	// the place of the one idle the longest (between requests, or not yet
	// sent its first: as nginx reuses connections), which is closed. Only
	// when none is idle does the server stop accepting until one closes or
	// goes idle: the connection it accepted last waits (one more than
	// MaxConns) and new clients wait in the kernel's listen queue. Zero
	// means no limit.
	MaxConns int
	// MaxConnsPerClient bounds how many connections one client may hold
	// at once: an IPv4 address, or an IPv6 /64. A connection beyond it is
	// closed at once, before anything is read. Zero means no limit (for
	// clients behind a front that hides their addresses). Tune changes it.
	MaxConnsPerClient int
	// HTTP2 serves HTTP/2 on TLS connections that negotiated "h2" by ALPN
	// (the listener's tls.Config offers it), with golang.org/x/net/http2.
	HTTP2 bool
	// H2C serves HTTP/2 on cleartext connections whose first bytes are the
	// HTTP/2 client preface (prior knowledge; there is no Upgrade: h2c).
	// Others are served HTTP/1.1.
	H2C bool
	// HTTP2Limits bound HTTP/2 connections; Tune changes them for the
	// next connections.
	HTTP2Limits
	// ErrorLog, if set, receives handler panics other than
	// http.ErrAbortHandler, and accept errors (at most one a second).
	ErrorLog func(msg string)
	// BadRequest, if set, is called with the status of every answer the
	// server gives itself to a request it could not read (malformed, too
	// large, an Expect it does not support): the client's mistakes, which
	// never reach Handler.
	BadRequest func(status int)
	// Notice, if set, is told when the server holds its limits: a
	// connection refused under MaxConnsPerClient, idle connections closed
	// at MaxConns, HTTP/2 connections closed for flooding (each at most
	// once a second).
	Notice func(msg string)

	initOnce sync.Once
	cur      atomic.Pointer[Limits] // in force; the fields above seed it
	parker   *parker                // nil where parking is not supported
	closing  atomic.Bool
	done     chan struct{} // closed by Shutdown
	slots    chan struct{} // one element per open connection, when MaxConns > 0
	idled    chan struct{} // a connection parked (buffered, one element)
	nextID   atomic.Int32  // numbers connections, to tell one from a later one on the same descriptor

	reclaimed, refused    atomic.Uint64
	floods                atomic.Uint64
	floodLog              everySecond
	h2Pending             atomic.Int32 // HTTP/2 connections reclaimed, not closed yet
	h2ReclaimAt           atomic.Int64 // when one was reclaimed last (a clock.Nanos reading)
	reclaimLog, refuseLog everySecond

	clientsMu sync.Mutex
	clients   map[netip.Addr]int // connections held by client (clientKey)

	mu        sync.Mutex // guards listeners and conns
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}

	noParking bool // tests: connections wait on their goroutines
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		l := &Limits{
			ReadHeaderTimeout: s.ReadHeaderTimeout, IdleTimeout: s.IdleTimeout,
			BodyReadTimeout: s.BodyReadTimeout, WriteTimeout: s.WriteTimeout,
			MaxHeaderBytes: s.MaxHeaderBytes, MaxHeaderFields: s.MaxHeaderFields,
			MaxConnsPerClient: s.MaxConnsPerClient, HTTP2Limits: s.HTTP2Limits,
		}
		l.setDefaults()
		s.cur.Store(l)
		s.done = make(chan struct{})
		if s.MaxConns > 0 {
			s.slots = make(chan struct{}, s.MaxConns)
		}
		s.idled = make(chan struct{}, 1)
		s.clients = map[netip.Addr]int{}
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		if !s.noParking {
			s.parker = newParker(s)
		}
		if s.parker != nil {
			s.parker.start()
		}
	})
}

// Limits are a Server's timeouts, head limits and per-client connection
// cap, which Tune changes while it serves. Zero values mean the defaults
// of the Server fields of the same names.
type Limits struct {
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	BodyReadTimeout   time.Duration
	WriteTimeout      time.Duration
	MaxHeaderBytes    int
	MaxHeaderFields   int
	// MaxConnsPerClient is the Server field of that name; zero means no
	// limit here too.
	MaxConnsPerClient int
	HTTP2Limits
}

// HTTP2Limits bound an HTTP/2 connection, beside what it shares with
// HTTP/1.1: its header list is bounded by MaxHeaderBytes, it closes with a
// GOAWAY after IdleTimeout without a stream, each write to it may block
// at most WriteTimeout (the connection as a whole: no byte written that
// long closes it; one stream: a write that waits that long on the
// client's flow-control window resets the stream) and each piece of a
// request body is due within BodyReadTimeout. Each applies to the
// connections accepted after it is set.
type HTTP2Limits struct {
	// H2MaxConcurrentStreams bounds the streams a connection may have
	// open at once; more are refused. Zero means 100.
	H2MaxConcurrentStreams int
	// H2StreamWindow is the flow-control window of each stream: how much
	// of a request body the client may send before the handler reads it.
	// Zero means 256 KiB.
	H2StreamWindow int
	// H2ConnWindow is the connection's flow-control window, all its
	// streams together. Zero means 1 MiB.
	H2ConnWindow int
	// H2ReadIdleTimeout is how long a connection may go without a frame
	// from its client before the server pings it. Zero means 60s.
	H2ReadIdleTimeout time.Duration
	// H2PingTimeout is how long the answer to that ping may take before
	// the connection is closed. Zero means 15s.
	H2PingTimeout time.Duration
}

func (l *Limits) setDefaults() {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = 10 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 120 * time.Second
	}
	if l.BodyReadTimeout <= 0 {
		l.BodyReadTimeout = 30 * time.Second
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 30 * time.Second
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	if l.MaxHeaderFields <= 0 {
		l.MaxHeaderFields = 100
	}
	if l.H2MaxConcurrentStreams <= 0 {
		l.H2MaxConcurrentStreams = defaultH2Streams
	}
	if l.H2StreamWindow <= 0 {
		l.H2StreamWindow = defaultH2StreamWin
	}
	if l.H2ConnWindow <= 0 {
		l.H2ConnWindow = defaultH2ConnWin
	}
	if l.H2ReadIdleTimeout <= 0 {
		l.H2ReadIdleTimeout = defaultH2ReadIdle
	}
	if l.H2PingTimeout <= 0 {
		l.H2PingTimeout = defaultH2PingTimeout
	}
}

// Tune replaces the server's limits; each connection applies them from its
// next read or write on, and the per-client cap applies to the next
// connections accepted. It may be called while the server serves.
func (s *Server) Tune(l Limits) {
	s.init()
	l.setDefaults()
	s.cur.Store(&l)
}

// limits returns the limits in force.
func (s *Server) limits() *Limits { return s.cur.Load() }

// Serve accepts connections on ln until Shutdown, then returns nil; it
// returns the accept error if accepting fails otherwise.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	var lastLog time.Time
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			if !temporary(err) {
				return err
			}
			// Out of descriptors or a connection reset before accept: say
			// so (once a second at most), wait and try again rather than
			// spin.
			if now := time.Now(); s.ErrorLog != nil && now.Sub(lastLog) >= time.Second {
				lastLog = now
				s.ErrorLog(fmt.Sprintf("h1: accept on %s: %v; retrying", ln.Addr(), err))
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		// Refused beyond its client's cap first, so that a client that
		// holds its cap cannot make the server close idle connections.
		client := clientOf(nc)
		pp := pendingHeader(nc)
		if pp != nil {
			client = netip.Addr{} // counted once its header names it
		}
		limit := s.limits().MaxConnsPerClient
		n, ok := s.admit(client, limit)
		if !ok && s.busyOf(client) < limit {
			// The cap is on connections in use: a client whose pool
			// keeps idle keep-alive connections beside its requests (an
			// HTTP client's pool grows past its concurrency) may open
			// more; MaxConns closes idle ones when it must.
			n, ok = s.admit(client, 0)
		}
		if !ok {
			s.refuseClient(nc, client, n)
			continue
		}
		if !s.acquireSlot() {
			s.leave(client)
			nc.Close()
			return nil
		}
		c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), id: s.nextID.Add(1),
			client: client, fresh: true, pp: pp}
		if tc, ok := nc.(*tls.Conn); ok {
			c.fd = socket(tc.NetConn()) // watched for a hang-up, never parked
			if h, ok := tc.NetConn().(*heldConn); ok && c.fd >= 0 {
				c.held = h
				h.sent = c.heldSent
			}
		} else {
			c.fd = socket(nc)
			c.parkable = c.fd >= 0
		}
		c.rd.c = c
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// Conns returns how many client connections the server holds, parked and
// hijacked ones included when MaxConns is set (otherwise hijacked ones are
// not counted).
func (s *Server) Conns() int {
	s.init() // a scrape may come while Serve is starting: its fields are set once, under the Once
	if s.slots != nil {
		return len(s.slots)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Shutdown stops accepting, closes idle connections, and waits until every
// connection still serving a request has finished it and closed, or ctx is
// done. Hijacked connections are the handler's and are not waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	if !s.closing.Swap(true) {
		close(s.done)
	}
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	if s.parker != nil {
		s.parker.stop()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		// An accept loop still running may add a connection it accepted
		// as the listener closed: wait for those loops too.
		n := len(s.conns) + len(s.listeners)
		for c := range s.conns {
			switch st := c.state.Load(); st {
			case stateIdle, stateHandshake:
				// Wake it: it sees closing and closes. A handshake has no
				// request to finish. A connection accepted a moment ago
				// and silent yet is given freshGrace for its first request
				// first: its client dialed to send one, and, the
				// connection never used, would not retry it on a close.
				if st == stateIdle && !c.kept.Load() && clock.Nanos()-c.idleSince.Load() < int64(freshGrace) {
					continue
				}
				c.nc.SetReadDeadline(longAgo)
			case stateH2Busy, stateH2Idle, stateReclaimed:
				c.goAway() // HTTP/2: its open streams finish, then it closes
			}
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

var longAgo = time.Unix(1, 0)

// freshGrace is how long Shutdown lets a connection that has not sent its
// first request yet send it (it is then served, and closed after its
// answer), so that a connection accepted just before the listener closed
// (or, on an upgrade, before the old process stopped accepting) is not
// closed under a request its client is sending.
const freshGrace = 5 * time.Second

// forget removes c from the server's connections without closing it.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

const (
	stateActive    int32 = iota // reading or serving a request
	stateIdle                   // its goroutine waits for the next request
	stateParked                 // held by the poller, no goroutine
	stateReclaimed              // was idle, and is to close for a new connection (MaxConns)
	stateHandshake              // in its TLS handshake, begun by the client
)

// conn is one client connection.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string
	state  atomic.Int32
	br     *bufio.Reader // nil while parked
	bw     *writer       // nil while parked
	resp   *response     // nil while parked
	reqs   *requestStore // where requests are read; nil while parked

	// ctx is the context of the connection's requests, cancelled when the
	// client hangs up during a slow request, or the connection closes or
	// parks (a parked connection has none: a context that requests have
	// watched keeps a map, which ten thousand idle clients would pay for).
	ctx      context.Context
	cancel   context.CancelFunc
	watch    cancelWatch  // what runs when ctx is cancelled (AfterCancel)
	reqStart atomic.Int64 // when the current request started (a clock.Nanos reading), 0 between requests
	watched  atomic.Bool  // the parker watches for a hang-up

	// idleSince is when the connection last began waiting for a request
	// (a clock.Nanos reading).
	idleSince atomic.Int64
	// kept is true while the connection idles after a request (kept
	// alive), false before its first: only a kept connection is given up
	// for another of its client's.
	kept atomic.Bool
	fd   int // the socket (a TLS connection's too), or -1
	// parkable is true when the connection may be parked: it has a socket
	// and no layer above it that may hold bytes read from it (TLS).
	parkable bool
	id       int32 // the server's number for it
	// older and newer link the parked connections, oldest first (parker.mu).
	older, newer *conn
	client       netip.Addr // what it counts against under MaxConnsPerClient

	// fresh is true until the connection's first request head has been
	// read. Until its first byte it is idle like a kept one (IdleTimeout,
	// reclaimed at MaxConns) but counts as in use under MaxConnsPerClient.
	fresh    bool
	rd       connReader  // what br reads through
	released atomic.Bool // its slot and client count were given back
	tls      *tls.ConnectionState
	// handshook is true once handshake has run (TLS).
	handshook bool
	// pp is the connection's PROXY protocol layer while its header is to
	// be read (from a trusted peer), else nil.
	pp *proxyproto.Conn
	// flushLater is set when the answer to the last request waits in bw,
	// for awaitRequest to send it in the same step as the wait for the
	// next request (see sendAndAwait); rc is the socket's, for that step
	// and sock (nil until taken, see rawSocket); await is c.awaitStep, made once, and
	// step and flushErr its state. pipelined is set once the client has
	// sent a request before its answer to the one before went out:
	// then every answer is sent at once.
	//
	// held is the socket beneath a TLS connection from NewTLSListener,
	// which sends a kept answer within that wait (sendAndAwaitTLS).
	flushLater, pipelined bool
	held                  *heldConn
	// sock reads and writes a cleartext connection's socket raw while it
	// serves (pooled, see acquire); nil while parked, and for others.
	sock     *rawsock.IO
	rc       syscall.RawConn
	await    func(uintptr) bool
	step     int
	flushErr error
	// HTTP/2 (h2.go): the server x/net takes its GOAWAY from, set before
	// h2ready; whether a GOAWAY may be sent, and was.
	h2                *http.Server
	h2ready, wentAway atomic.Bool
}

// tlsState returns the TLS connection's state (nil for cleartext), read
// once: the handshake is over by the first request's head.
func (c *conn) tlsState() *tls.ConnectionState {
	if c.tls == nil {
		if tc, ok := c.nc.(*tls.Conn); ok {
			st := tc.ConnectionState()
			c.tls = &st
		}
	}
	return c.tls
}

// connReader is what a connection's bufio.Reader reads from. While a
// request body is being read it moves the read deadline along, so each
// piece of body gets BodyReadTimeout; otherwise the deadlines set by serve
// and awaitRequest stand.
type connReader struct {
	c        *conn
	body     bool
	deadline int64 // the read deadline set last in body mode (a clock.Nanos reading)
	limit    int64 // when the whole body is due (a clock.Nanos reading); 0 for none
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.body {
		r.deadline = clock.Refresh(r.c.nc.SetReadDeadline, r.deadline, r.c.s.limits().BodyReadTimeout)
		if r.limit != 0 && r.deadline > r.limit {
			r.deadline = r.limit
			r.c.nc.SetReadDeadline(clock.At(r.limit))
		}
	}
	if r.c.sock != nil {
		return r.c.sock.Read(p)
	}
	return r.c.nc.Read(p)
}

// startBody switches r to body mode.
func (r *connReader) startBody() {
	r.body = true
	r.deadline, r.limit = 0, 0
}

var (
	readers       = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers       = sync.Pool{New: func() any { return newWriter(4 << 10) }}
	responses     = sync.Pool{New: func() any { return new(response) }}
	requestStores = sync.Pool{New: func() any { return new(requestStore) }}
	socks         = sync.Pool{New: func() any { return rawsock.New(nil, nil) }}
)

// acquire gives c what serving requests takes: buffers, a response writer
// and a context.
func (c *conn) acquire() {
	c.br = readers.Get().(*bufio.Reader)
	c.br.Reset(&c.rd)
	if _, plain := c.nc.(*net.TCPConn); rawsock.Supported && plain && c.rawSocket() != nil { // not under a PROXY protocol layer
		c.sock = socks.Get().(*rawsock.IO)
		c.sock.Reset(c.rc, c.nc)
	}
	c.bw = writers.Get().(*writer)
	c.bw.reset(c.nc, c.sock, c.s.limits().WriteTimeout)
	c.resp = responses.Get().(*response)
	ctx, cancel := context.WithCancel(context.Background())
	c.ctx = context.WithValue(ctx, connKey{}, c)
	c.watch.begin(c.ctx)
	c.reqs = requestStores.Get().(*requestStore)
	c.reqs.begin(c.ctx)
	c.cancel = func() {
		cancel()
		c.watch.fire()
	}
}

// release returns what acquire took, when c parks or closes: a parked
// connection holds only its socket and this struct.
func (c *conn) release() {
	if c.br == nil {
		return
	}
	c.cancel()
	c.watch.end()
	c.ctx, c.cancel = nil, nil
	c.reqs.end()
	requestStores.Put(c.reqs)
	c.reqs = nil
	c.br.Reset(nil)
	readers.Put(c.br)
	c.bw.reset(nil, nil, 0)
	writers.Put(c.bw)
	if c.sock != nil {
		c.sock.Reset(nil, nil)
		socks.Put(c.sock)
		c.sock = nil
	}
	c.br, c.bw = nil, nil
	c.resp.reset(nil, nil)
	responses.Put(c.resp)
	c.resp = nil
}

// lingeringClose closes a connection whose client may still be sending
// (a refused head, an unread body): closing with unread input makes the
// kernel send a reset, which can destroy the answer before the client reads
// it. So stop writing, drain what arrives for a moment, then close.
func (c *conn) lingeringClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		io.CopyN(io.Discard, c.nc, 4<<20)
	}
	c.close()
}

func (c *conn) close() {
	c.endRequest()
	c.nc.Close()
	c.release()
	c.s.forget(c)
	c.releaseSlot()
}

// releaseSlot gives back c's slot under MaxConns and its count under
// MaxConnsPerClient, once.
func (c *conn) releaseSlot() {
	if !c.released.Swap(true) {
		c.s.leave(c.client)
		c.s.releaseSlot()
	}
}

// serve reads and answers requests until the connection closes, is
// hijacked, or parks.
func (c *conn) serve() {
	c.acquire()
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler && c.s.ErrorLog != nil {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.ErrorLog(fmt.Sprintf("h1: panic serving %s: %v\n%s", c.remote, v, buf))
			}
			if c.resp == nil || !c.resp.hijacked {
				c.close()
			}
		}
	}()
	for {
		if !c.awaitRequest() {
			return
		}
		if c.fresh && (c.s.HTTP2 || c.s.H2C) && c.wantsH2() {
			c.serveH2()
			return
		}
		// The head is due ReadHeaderTimeout after its first byte, the
		// first head of a connection too. A connection silent since
		// accept was idle, not slow: a client's pool may hold one it
		// dialed and did not need, and send on it much later.
		now := clock.Now()
		c.reqStart.Store(now.UnixNano())
		lim := c.s.limits()
		c.nc.SetReadDeadline(now.Add(lim.ReadHeaderTimeout))
		req, err := readRequest(c.reqs, c.br, limits{lim.MaxHeaderBytes, lim.MaxHeaderFields}, c.remote)
		if err != nil {
			c.refuse(err)
			return
		}
		req.TLS = c.tlsState()
		c.fresh = false
		if req.ContentLength != 0 {
			c.rd.startBody() // each piece of body gets BodyReadTimeout
		}
		if !c.handle(req) {
			return
		}
	}
}

// awaitRequest waits for the first byte of the next request. It reports
// false when the connection closed or parked instead.
func (c *conn) awaitRequest() bool {
	if c.br.Buffered() > 0 && !c.flushLater {
		return true
	}
	c.rd.body = false
	if c.held != nil {
		c.held.began = false
	}
	start := clock.Now()
	lim := c.s.limits()
	limit := start.Add(lim.IdleTimeout)
	deadline := limit
	if c.s.parker != nil && c.parkable {
		// A connection that cannot be parked (a TLS one: its layer may
		// hold bytes read from the socket) waits its idle time here.
		deadline = minTime(limit, start.Add(parkAfter))
	}
	if c.flushLater {
		c.flushLater = false
		sent := false
		if c.held != nil {
			sent = c.sendAndAwaitTLS(minTime(limit, start.Add(parkAfter)), limit)
		} else {
			sent = c.sendAndAwait(deadline, limit)
		}
		if !sent {
			c.close()
			return false
		}
	} else {
		c.idle(deadline, start)
	}
	if c.s.closing.Load() {
		if !c.fresh {
			if (c.br.Buffered() > 0 || c.arrived() || c.tlsHolds() || c.tlsBegun()) && c.state.CompareAndSwap(stateIdle, stateActive) {
				// Its next request came before the shutdown closed it
				// (pipelined, its wait cut short): it is in use, as one
				// already read is, and is answered (Connection: close).
				return true
			}
			c.close()
			return false
		}
		// Its first request may be on its way: freshGrace for it
		// (not parked meanwhile: the parker is stopping).
		deadline = minTime(limit, start.Add(freshGrace))
		c.nc.SetReadDeadline(deadline)
	}
	err := c.handshake()
	if err == nil {
		_, err = c.br.Peek(1)
	}
	if !c.state.CompareAndSwap(stateIdle, stateActive) {
		// Reclaimed for a new connection. If a request arrived just now,
		// the client sees the connection close under it, as when an idle
		// timeout fires: it may retry (RFC 9112, 9.3.1).
		c.close()
		return false
	}
	if err == nil {
		return true
	}
	if isTimeout(err) && c.s.closing.Load() && !c.fresh && c.tlsBegun() {
		// Its next request began to arrive before Shutdown woke it: it
		// is served (Connection: close), its head due in
		// ReadHeaderTimeout, as one a cleartext reader holds part of.
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && c.s.parker != nil && !c.s.closing.Load() && deadline.Before(limit) {
		c.release()
		c.state.Store(stateParked)
		if c.s.parker.park(c) {
			return false
		}
		c.acquire() // the parker has stopped: Shutdown began
	}
	if errors.As(err, &ne) && ne.Timeout() && c.fresh && c.s.closing.Load() && time.Since(start) < freshGrace {
		// Shutdown began while it waited to park: its first request may
		// be on its way, freshGrace for it (once: the wait starts over
		// with the closing's deadline).
		return c.awaitRequest()
	}
	c.close()
	return false
}

// arrived reports whether bytes of a request wait to be read: in the
// socket, or in a layer above it.
func (c *conn) arrived() bool {
	return c.fd >= 0 && unread(c.fd) || c.layerHolds()
}

// tlsHolds reports whether TLS holds a record of the next request, read
// from the socket with the one before (the client sent both in one
// segment): neither the socket nor br shows it. It looks with a deadline
// past, which reads nothing from the socket, and leaves what it found in
// br; the deadline is the caller's to set again.
func (c *conn) tlsHolds() bool {
	if _, ok := c.nc.(*tls.Conn); !ok || c.fresh {
		return false
	}
	c.nc.SetReadDeadline(longAgo)
	_, err := c.br.Peek(1)
	return err == nil
}

// tlsBegun reports whether TLS has read bytes of the next request from
// the socket since the connection began to wait for it: TLS shows
// nothing of a record until it is whole.
func (c *conn) tlsBegun() bool { return c.held != nil && c.held.began }

// layerHolds reports whether a layer between the socket and br (the PROXY
// protocol's) holds bytes read from the socket.
func (c *conn) layerHolds() bool {
	pc, ok := c.nc.(*proxyproto.Conn)
	return ok && pc.Buffered() > 0
}

// idle makes c idle: waiting for its next request until deadline. The
// deadline is set before the state: whoever sees the connection idle
// (Shutdown, a reclaim) and moves its deadline does so after this.
func (c *conn) idle(deadline, now time.Time) {
	c.nc.SetReadDeadline(deadline)
	c.markIdle(now)
}

// markIdle records that c waits for its next request since now.
func (c *conn) markIdle(now time.Time) {
	c.idleSince.Store(now.UnixNano())
	c.kept.Store(!c.fresh)
	c.state.Store(stateIdle)
}

// sendAndAwait sends the answer waiting in bw, makes c idle until
// deadline, and, when deadline comes before limit (the connection would
// park at deadline, not close), waits without reading until the next
// request's first bytes can be read. It reports false when the answer
// could not be sent.
//
// A read right after the answer went out would find nothing (EAGAIN) and
// cost a system call per request for no bytes: the client sends its next
// request only once it has the answer. So the answer goes out inside the
// poller's read wait (RawConn.Read), after the poller has forgotten any
// earlier readiness: whatever the client sends from then on wakes the
// wait. What it sent before, while the request before was being handled
// (pipelined), the poller may have reported and forgotten: the wait then
// ends at deadline (parkAfter), a look finds the bytes, and the
// connection is marked pipelined: from then on its answers go out at
// once, and the read for the next request follows as before. A pipelining
// client may so wait parkAfter once.
//
// The connection is idle only once the answer is out: Shutdown and a
// reclaim close idle connections, which must not cut an answer short.
func (c *conn) sendAndAwait(deadline, limit time.Time) bool {
	if deadline.Before(limit) && c.rawSocket() != nil {
		if c.await == nil {
			c.await = c.awaitStep
		}
		c.nc.SetReadDeadline(deadline) // before the wait: an earlier one may be past
		c.step, c.flushErr = 0, nil
		err := c.rc.Read(c.await)
		if c.step > 0 { // else the wait failed before it began (deadline, close)
			if c.flushErr != nil {
				return false
			}
			if err != nil && isTimeout(err) && unread(c.fd) {
				// Bytes the wait missed: sent before it began.
				c.pipelined = true
				c.nc.SetReadDeadline(limit)
			}
			return true
		}
	}
	if c.bw.Flush() != nil {
		return false
	}
	c.idle(deadline, clock.Now())
	return true
}

// sendAndAwaitTLS is sendAndAwait for a TLS connection over a heldConn:
// the answer is encrypted into the socket's keeping, and the read of the
// next request's first bytes sends it inside the poller's wait (see
// heldConn), which ends at deadline, then goes on until limit as any
// read does. What a client pipelined may go unseen by the wait, as on a
// cleartext connection: a look at deadline marks the connection
// pipelined. Bytes TLS had read already are served without a wait, the
// kept answer sent first. It reports false when the answer could not be
// sent.
func (c *conn) sendAndAwaitTLS(deadline, limit time.Time) bool {
	h := c.held
	h.hold = true
	err := c.bw.Flush()
	h.hold = false
	if err != nil {
		h.drop()
		return false
	}
	if !deadline.Before(limit) || c.s.closing.Load() {
		if h.flush() != nil {
			return false
		}
		c.idle(limit, clock.Now())
		return true
	}
	c.nc.SetReadDeadline(deadline)
	_, err = c.br.Peek(1)
	if h.werr != nil {
		h.werr = nil
		return false
	}
	if h.pending() {
		// Not sent: TLS held the next request already, or the wait
		// failed before it began.
		if err == nil {
			c.pipelined = true
		}
		if h.flush() != nil {
			return false
		}
		c.idle(limit, clock.Now())
		return true
	}
	if err != nil && isTimeout(err) && clock.Now().Before(limit) {
		if unread(c.fd) {
			c.pipelined = true // bytes the wait missed: sent before it began
		}
		c.nc.SetReadDeadline(limit) // the read goes on
		// Unless a reclaim ended the wait (its past deadline is undone
		// just above): the connection is no longer idle, and is to close
		// now. A reclaim after the look sets its deadline after this one.
		if c.state.Load() != stateIdle {
			c.nc.SetReadDeadline(longAgo)
		}
	}
	return true
}

// heldSent is called by c.held once a kept answer is out: c is idle from
// then on. It reports whether the wait is to be skipped (closing).
func (c *conn) heldSent() bool {
	c.markIdle(clock.Now())
	return c.s.closing.Load()
}

// rawSocket returns c's socket, for sock and sendAndAwait's wait, taken
// at its first use, or nil.
func (c *conn) rawSocket() syscall.RawConn {
	if c.rc == nil {
		if sc, ok := c.nc.(syscall.Conn); ok {
			c.rc, _ = sc.SyscallConn()
		}
	}
	return c.rc
}

// awaitStep is sendAndAwait's callback: the first call sends the answer,
// makes the connection idle and asks the poller to wait (unless the send
// failed, or the server is closing); the next says readable.
func (c *conn) awaitStep(uintptr) bool {
	if c.step > 0 {
		return true
	}
	c.step = 1
	if c.flushErr = c.bw.Flush(); c.flushErr != nil {
		return true
	}
	c.markIdle(clock.Now())
	return c.s.closing.Load()
}

// handshake runs the TLS handshake of a connection that has not had it,
// once its client has sent its first byte: silent until then, the
// connection is idle (a client may dial ahead of need); after it, the
// handshake is a slow head's like any other, due within ReadHeaderTimeout,
// and the connection is in use (not reclaimed; Shutdown, though, closes it:
// it has no request to finish). It returns with the
// connection idle again, waiting for its first request until IdleTimeout.
// It does nothing for a cleartext connection, or where the first byte
// cannot be awaited without reading it (the handshake then runs on the
// first read, under the idle deadline).
//
// A PROXY protocol header (see proxyproto) is read here too, before the
// TLS handshake, on the same terms: awaited as idle, then due with the
// handshake within ReadHeaderTimeout of its first byte; once read, the
// connection is its client's (RemoteAddr, MaxConnsPerClient).
func (c *conn) handshake() error {
	tc, ok := c.nc.(*tls.Conn)
	if (!ok || c.handshook) && c.pp == nil {
		return nil
	}
	raw := c.nc
	if ok {
		raw = tc.NetConn()
		c.handshook = true
	}
	if err := awaitBytes(raw); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	} else if err != nil && c.pp == nil {
		return nil
	}
	lim := c.s.limits()
	due := clock.Now().Add(lim.ReadHeaderTimeout)
	c.nc.SetDeadline(due) // the deadline before the state, for Shutdown
	if !c.state.CompareAndSwap(stateIdle, stateHandshake) {
		return errReclaimed // the caller sees the state and closes
	}
	if c.s.closing.Load() {
		return net.ErrClosed
	}
	if c.pp != nil {
		if err := c.proxyHeader(due); err != nil {
			c.state.Store(stateActive) // the caller closes
			return err
		}
	}
	if ok {
		if err := tc.Handshake(); err != nil {
			c.state.Store(stateActive) // the caller closes
			return err
		}
	}
	c.nc.SetWriteDeadline(time.Time{}) // the writer sets its own
	now := clock.Now()
	c.nc.SetReadDeadline(now.Add(lim.IdleTimeout)) // the deadline before the state, as in awaitRequest
	c.idleSince.Store(now.UnixNano())
	c.state.Store(stateIdle)
	if c.s.closing.Load() {
		return net.ErrClosed // Shutdown may have passed it by while it was in use
	}
	return nil
}

var errReclaimed = errors.New("h1: reclaimed")

// proxyHeader reads c's PROXY header by due, and counts the connection
// against the client it names (its peer's when it names none) under
// MaxConnsPerClient: a client beyond its cap is refused.
func (c *conn) proxyHeader(due time.Time) error {
	pp := c.pp
	c.pp = nil
	if err := pp.ReadHeader(due); err != nil {
		return err
	}
	c.remote = pp.RemoteAddr().String()
	client := clientOf(pp)
	limit := c.s.limits().MaxConnsPerClient
	n, ok := c.s.admit(client, limit)
	if !ok && c.s.busyOf(client) < limit {
		n, ok = c.s.admit(client, 0) // as in Serve
	}
	if !ok {
		c.s.refused.Add(1)
		if c.s.Notice != nil && c.s.refuseLog.due() {
			c.s.Notice(fmt.Sprintf("h1: refused a connection from %s: it holds %d, the most one client may (%d refused so far)",
				client, n, c.s.refused.Load()))
		}
		return errRefused
	}
	c.s.mu.Lock()
	c.client = client
	c.s.mu.Unlock()
	return nil
}

var errRefused = errors.New("h1: the client holds its most connections")

// pendingHeader returns nc's PROXY protocol layer, under its TLS if any,
// when its header is yet to be read.
func pendingHeader(nc net.Conn) *proxyproto.Conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if pc, ok := nc.(*proxyproto.Conn); ok && pc.Pending() {
		return pc
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// idleLimit returns when a parked c must be closed: IdleTimeout after it
// began to wait for its next request, or for its first. A connection that
// has sent nothing since accept is given no less: to the client that
// dialed it, it is as kept alive as any other in its pool (Go's counts it
// as reused, and sends a GET that meets it closed again unseen).
func (c *conn) idleLimit() int64 {
	return c.idleSince.Load() + int64(c.s.limits().IdleTimeout)
}

// refuse answers a request that could not be read, if there is anything to
// say, and closes the connection.
func (c *conn) refuse(err error) {
	var re *requestError
	if errors.As(err, &re) {
		if c.s.BadRequest != nil {
			c.s.BadRequest(re.status)
		}
		fmt.Fprintf(c.bw, "%sContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\n",
			statusLine(re.status), len(re.msg)+1, re.msg)
		c.bw.Flush()
	}
	c.lingeringClose()
}

// handle runs the handler for req and reports whether the connection is
// ready for another request.
func (c *conn) handle(req *http.Request) bool {
	w := c.resp
	w.reset(c, req)
	if expect := req.Header["Expect"]; len(expect) > 0 {
		if len(expect) > 1 || !equalFoldTrim(expect[0], "100-continue") {
			c.refuse(&requestError{http.StatusExpectationFailed, "unsupported Expect header"})
			return false
		}
		if req.ProtoMinor >= 1 && req.ContentLength != 0 {
			req.Body = &continueBody{ReadCloser: req.Body, c: c}
		}
	}
	c.s.Handler.ServeHTTP(w, req)
	if w.hijacked {
		return false
	}
	w.finish()
	c.endRequest()
	if c.br.Buffered() > 0 {
		c.pipelined = true // the next request came before this answer went out
	}
	// The answer goes out with the wait for the next request, when its
	// end is still to send: an answer the handler sent whole (a body
	// larger than bw goes out at once, a flushed one too) may have been
	// read by its client, and the next request sent, while the handler
	// still worked. The poller may have reported that request already: a
	// wait begun now would miss it until parkAfter (no pipelining: the
	// client waited for its answer), so it is read at once, as before.
	cancelled := c.ctx.Err() != nil
	if !cancelled && !w.closeAfter && bodyDone(req.Body) && (c.parkable || c.held != nil) && !c.pipelined && !c.layerHolds() &&
		len(c.bw.buf) > 0 {
		c.flushLater = true
		return true
	}
	err := c.bw.Flush()
	switch {
	case err != nil || cancelled:
		c.close()
		return false
	case w.closeAfter && !bodyDone(req.Body):
		// Closing anyway: no point waiting for the rest of the body, but
		// let the client read the answer before the reset.
		c.lingeringClose()
		return false
	case w.closeAfter:
		c.close()
		return false
	case !c.discardBody(req.Body):
		c.lingeringClose()
		return false
	}
	return true
}

// endRequest ends the hang-up watch of the request, if it has one.
func (c *conn) endRequest() {
	c.reqStart.Store(0)
	if c.watched.Load() {
		c.s.parker.unwatch(c)
	}
}

// discardBody reads what the handler left of the request body, up to
// maxDiscard, and reports whether the connection can read the next request.
func (c *conn) discardBody(body io.ReadCloser) bool {
	if bodyDone(body) {
		return true
	}
	if cb, ok := body.(*continueBody); ok && !cb.sent {
		return false // the client still holds the body back: nothing to discard
	}
	c.rd.body = false
	c.nc.SetReadDeadline(time.Now().Add(c.s.limits().ReadHeaderTimeout))
	n, _ := io.CopyN(io.Discard, body, maxDiscard+1)
	return n <= maxDiscard && bodyDone(body)
}
