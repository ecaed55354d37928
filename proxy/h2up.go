//lint:file-ignore SA1019 x/net/http2's ClientConn is one connection's RoundTrip without the Transport's own retries, which vipswap decides itself (docs/dependencies.md)

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/internal/sockerr"
	"github.com/vipswap/vipswap/internal/writebehind"
	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/route"
)

// HTTP/2 towards instances (protocol h2c and h2).
//
// Each instance has a pool of HTTP/2 connections made by x/net/http2
// (one usually: a connection carries up to the instance's
// SETTINGS_MAX_CONCURRENT_STREAMS streams). vipswap calls the connections'
// RoundTrip itself, never the Transport's, which would retry on its own:
// whether a failed attempt may go to another instance stays vipswap's
// decision (h2Failure), on the same rule as HTTP/1.1: only what provably
// never reached an instance goes elsewhere whatever its method.

// h2conn returns a connection to pl's instance with a stream reserved for
// the attempt, and whether it carried streams before. It dials one when
// none can take a stream (always, when fresh); concurrent attempts wait
// for one dial rather than each making its own.
func (pl *pool) h2conn(ctx context.Context, fresh bool, timeout time.Duration) (*http2.ClientConn, bool, error) {
	for {
		pl.mu.Lock()
		if pl.closed {
			pl.mu.Unlock()
			return nil, false, errors.New("the instance left the routing table")
		}
		if !fresh {
			kept := pl.h2[:0]
			var got *http2.ClientConn
			for _, x := range pl.h2 {
				if st := x.cc.State(); st.Closed || st.Closing {
					continue // gone, or going: it closes itself once idle
				}
				kept = append(kept, x)
				if got == nil && x.cc.ReserveNewRequest() {
					got = x.cc
				}
			}
			clear(pl.h2[len(kept):])
			pl.h2 = kept
			if got != nil {
				pl.mu.Unlock()
				return got, true, nil
			}
			if d := pl.dialing; d != nil {
				pl.mu.Unlock()
				select {
				case <-d.done:
					if d.err != nil && !errors.Is(d.err, context.Canceled) { // not its own client's going
						// The dial the attempt waited for failed: so does
						// the attempt, rather than dial again in turn.
						return nil, false, d.err
					}
					continue
				case <-ctx.Done():
					return nil, false, ctx.Err()
				}
			}
		}
		d := &h2dial{done: make(chan struct{})}
		if !fresh {
			pl.dialing = d
		}
		pl.mu.Unlock()
		x, err := pl.dialH2(ctx, timeout)
		cc := x.cc
		pl.mu.Lock()
		if pl.dialing == d {
			pl.dialing = nil
		}
		d.err = err
		close(d.done)
		switch {
		case err != nil:
		case pl.closed:
			x.abort()
			err = errors.New("the instance left the routing table")
		case !cc.ReserveNewRequest():
			x.abort()
			err = errors.New("a new HTTP/2 connection takes no stream")
		default:
			pl.h2 = append(pl.h2, x)
		}
		pl.mu.Unlock()
		return cc, false, err
	}
}

// h2dial is a dial under way for a pool's HTTP/2 connection; err is set
// before done is closed.
type h2dial struct {
	done chan struct{}
	err  error
}

// dialH2 connects to pl's instance and starts HTTP/2 on the connection:
// over TLS, the instance must have chosen h2 by ALPN.
func (pl *pool) dialH2(ctx context.Context, timeout time.Duration) (h2pooled, error) {
	c, err := pl.dial(ctx, timeout)
	if err != nil {
		return h2pooled{}, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			c.Close()
			return h2pooled{}, &handshakeError{err: fmt.Errorf("the instance did not agree to HTTP/2 (ALPN h2; it chose %q)", p)}
		}
	}
	// What x/net writes is sent from a goroutine of the connection's own,
	// so that the requests of streams begun during a send leave with the
	// next one, each send due within InstanceWriteTimeout (see
	// writebehind); the preface and SETTINGS go out that way too.
	wb := writebehind.New(c, pl.h2t.WriteByteTimeout)
	cc, err := pl.h2t.NewClientConn(wb)
	if err != nil {
		wb.Abort()
		return h2pooled{}, &handshakeError{err: err}
	}
	return h2pooled{cc: cc, wb: wb}, nil
}

// attemptH2 sends r to inst over HTTP/2 once and waits for the response
// head. On success the returned exchange holds the stream: the response
// body streams from it while the request body may still stream to it.
func (p *Proxy) attemptH2(ctx context.Context, r *http.Request, rq *request, inst *route.Instance, up *Upstream) (*http.Response, exchange, error) {
	rq.sent, rq.head = time.Time{}, time.Time{}
	pl := p.poolFor(inst, up)
	// A new connection only to the instance whose pooled one was dead: any
	// other's may carry the stream.
	cc, reused, err := pl.h2conn(ctx, rq.fresh && rq.freshFor == inst, rq.o.ConnectTimeout)
	if err != nil {
		if sockerr.LocalShortage(err) {
			return nil, nil, &attemptError{kind: failLocal, err: err}
		}
		return nil, nil, &attemptError{kind: failDial, err: err}
	}
	sctx, cancel := context.WithCancel(ctx)
	x := &h2exchange{cancel: cancel, client: ctx, addr: inst.Addr}
	out := outboundH2(sctx, r, rq, inst, up, p.via)
	if rq.copy {
		out.Header[ShadowHeader] = []string{"copy"}
	}
	if rq.body != nil {
		if r.ProtoMajor == 1 && rq.buffered.b == nil &&
			strings.Contains(strings.ToLower(r.Header.Get("Expect")), "100-continue") {
			// HTTP/1.1 answers "100 Continue" on the body's first read,
			// on the client's connection: here, not on the transport's
			// goroutine while this one may be writing the answer.
			r.Body.Read(nil)
		}
		x.body = &streamBody{g: rq.body, r: r, stall: rq.o.InstanceWriteTimeout, trailer: out.Trailer}
		out.Body = x.body
	}
	var writeLate atomic.Bool
	if x.body != nil {
		x.body.onStall = func() { writeLate.Store(true); cancel() }
	}
	// The response head is due within ResponseHeaderTimeout of the
	// request's end, as over HTTP/1.1: the time a client takes to send a
	// streamed body is not the instance's.
	var headLate atomic.Bool
	head := &headTimer{d: rq.o.ResponseHeaderTimeout, fire: func() { headLate.Store(true); cancel() }}
	began := clock.Now()
	if x.body == nil {
		head.arm()
	} else {
		x.body.onEOF = head.arm
	}
	resp, err := cc.RoundTrip(out)
	rq.sent = began
	if x.body != nil {
		if t := x.body.eofAt.Load(); t != 0 {
			rq.sent = clock.At(t) // the request ended before its answer's head
		}
	}
	if head.stop() && err == nil {
		resp.Body.Close()
		err = context.DeadlineExceeded
	}
	if err != nil {
		x.Close() // the request body is no longer read after this
		ae := h2Failure(err, reused)
		if ae.kind == failClosed && !reused && cc.State().MaxConcurrentStreams == 0 {
			// The instance closed a new connection before its SETTINGS,
			// the first frame an HTTP/2 server sends: HTTP/2 never began
			// on it, as when a handshake fails.
			ae.kind, ae.err = failDial, errors.New("closed the connection before HTTP/2 began (no SETTINGS)")
		}
		switch {
		case headLate.Load():
			ae = &attemptError{kind: failTimeout, err: fmt.Errorf("no response head within %s", rq.o.ResponseHeaderTimeout)}
		case writeLate.Load():
			ae = &attemptError{kind: failTimeout, err: fmt.Errorf("took no more of the request body within %s", rq.o.InstanceWriteTimeout)}
		case ctx.Err() != nil:
			ae.kind = failClosed
		case errors.As(err, new(*h1.BodyError)):
			ae.kind = failClient
		}
		return nil, nil, ae
	}
	rq.head = clock.Now()
	resp.Body = &idleBody{rc: resp.Body, d: rq.o.InstanceReadTimeout, cancel: cancel}
	return resp, x, nil
}

// outboundH2 is the request for the instance: r's method, the routed
// target, r's headers but the hop-by-hop ones and the pin header,
// X-Forwarded-* and Via as over HTTP/1.1 (writeRequest), and r's body
// (set by the caller).
func outboundH2(ctx context.Context, r *http.Request, rq *request, inst *route.Instance, up *Upstream, via string) *http.Request {
	scheme := "http"
	if up.Protocol == H2 {
		scheme = "https"
	}
	u := &url.URL{Scheme: scheme, Host: inst.Addr}
	u.Opaque, u.RawQuery, _ = strings.Cut(rq.uri, "?")
	h := make(http.Header, len(r.Header)+4)
	hasConnection := len(r.Header["Connection"]) > 0
	pin := rq.o.PinHeader
	// The values are copied, into one array: the transport's goroutine
	// encodes them, and may still be at it when RoundTrip has returned
	// (the client hung up as it began); by then the client's connection
	// may be reading its next request into r's value slices (h1 reuses
	// them), which would put that request's values, or another
	// client's, in this one's.
	n := 0
	for _, vv := range r.Header {
		n += len(vv)
	}
	vals := make([]string, 0, n+5) // and the five below
	for k, vv := range r.Header {
		if hopHeaders[k] || skipOutbound[k] || vipswaps(k, pin) || (hasConnection && connectionListed(r.Header, k)) {
			continue
		}
		from := len(vals)
		vals = append(vals, vv...)
		h[k] = vals[from:len(vals):len(vals)]
	}
	// The fields vipswap sets have one value each, in the same array.
	one := func(v string) []string {
		vals = append(vals, v)
		return vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if te := r.Header.Values("Te"); len(te) > 0 && strings.Contains(strings.Join(te, ","), "trailers") {
		h["Te"] = one("trailers")
	}
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
		client = strings.Join(prior, ", ") + ", " + client
	}
	h["X-Forwarded-For"] = one(client)
	h["X-Forwarded-Host"] = one(r.Host)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	h["X-Forwarded-Proto"] = one(proto)
	v := via
	if prior := r.Header["Via"]; len(prior) > 0 {
		v = strings.Join(prior, ", ") + ", " + via
	}
	h["Via"] = one(v)
	out := (&http.Request{
		Method: r.Method, URL: u, Host: r.Host, Header: h,
		Proto: "HTTP/2.0", ProtoMajor: 2,
		ContentLength: r.ContentLength, Body: http.NoBody,
	}).WithContext(ctx)
	if rq.body == nil {
		out.ContentLength = 0
	}
	if len(r.Trailer) > 0 {
		// The client's trailers but those writeRequest leaves out (the
		// pin header, the fields vipswap sets, hop-by-hop ones): declared
		// here, given their values by the body's reader (the transport's
		// writer) at its end (streamBody).
		tr := make(http.Header, len(r.Trailer))
		for k := range r.Trailer {
			if !hopHeaders[k] && !skipOutbound[k] && !vipswaps(k, pin) {
				tr[k] = nil
			}
		}
		if len(tr) > 0 {
			out.Trailer = tr
		}
	}
	return out
}

// h2Failure says how far a failed HTTP/2 attempt got (see failure):
//   - the stream was refused (REFUSED_STREAM) or fell above a GOAWAY's
//     last stream: the instance did not process it (RFC 9113 section 8.7),
//     it may go anywhere;
//   - the connection could not take the stream (it had closed, or was
//     going away, before the stream was sent): a stale pooled connection;
//   - the instance reset the stream after taking it: its answer, never
//     retried;
//   - the connection broke with the stream on it: like an HTTP/1.1
//     connection closed without an answer;
//   - the instance broke the protocol (its headers beyond the limits, a
//     flow-control violation): an invalid answer.
func h2Failure(err error, reused bool) *attemptError {
	ae := &attemptError{kind: failClosed, err: err, reused: reused}
	var se http2.StreamError
	var ce http2.ConnectionError
	var ga http2.GoAwayError
	msg := err.Error()
	switch {
	case !reused && tlsRefused(err):
		ae.kind, ae.err = failDial, &handshakeError{err: err}
	case errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream:
		ae.kind, ae.err = failRefused, errors.New("refused the stream (REFUSED_STREAM)")
	case msg == "http2: Transport received Server's graceful shutdown GOAWAY",
		strings.HasPrefix(msg, "http2: Transport received GOAWAY from server ErrCode:"):
		ae.kind, ae.err = failRefused, errors.New("was going away (GOAWAY) before the stream")
	case msg == "http2: client conn not usable", msg == "http2: client conn is closed",
		msg == "http2: client conn could not be established":
		// The stream was never sent: a pooled connection had gone stale
		// (try a new one), or a new one closed at once (as a failed dial).
		ae.kind = failStale
		if !reused {
			ae.kind = failDial
		}
	case errors.As(err, &se):
		ae.kind, ae.err = failReset, fmt.Errorf("reset the stream (%v)", se.Code)
	case errors.As(err, &ga):
		ae.err = fmt.Errorf("closed the connection after GOAWAY (%v) without answering", ga.ErrCode)
	case errors.As(err, &ce):
		ae.kind, ae.err = failInvalid, fmt.Errorf("invalid HTTP/2 (%v)", http2.ErrCode(ce))
	case strings.Contains(msg, "header list larger than"), strings.Contains(msg, "invalid"), strings.Contains(msg, "malformed"):
		ae.kind = failInvalid
	default:
		ae.err = fmt.Errorf("closed the connection without answering: %w", err)
	}
	return ae
}

// exchange is an attempt that got a response head: what respond needs to
// pass the body on and end the attempt.
type exchange interface {
	// stopWatch ends the watch on the client's cancellation; false means
	// the client's request was cancelled.
	stopWatch() bool
	// pending reports whether more of the body is already at hand (so a
	// flush may wait).
	pending() bool
	// release ends an exchange whose response was passed on whole.
	release(r *http.Request, resp *http.Response, o *Options)
	// Close ends it otherwise.
	Close() error
	// RemoteAddr is the instance's address.
	RemoteAddr() net.Addr
}

// h2exchange is one HTTP/2 stream to an instance.
type h2exchange struct {
	cancel context.CancelFunc // resets the stream if it is not over
	client context.Context    // the client's request
	body   *streamBody        // the request body, as the transport reads it
	addr   string
	once   sync.Once
}

func (x *h2exchange) stopWatch() bool { return x.client.Err() == nil }
func (x *h2exchange) pending() bool   { return false }

func (x *h2exchange) release(*http.Request, *http.Response, *Options) { x.Close() }

// Close resets the stream if it is not over, and waits until the request
// body is no longer read.
func (x *h2exchange) Close() error {
	x.once.Do(func() {
		x.cancel()
		if x.body != nil {
			x.body.finish()
		}
	})
	return nil
}

func (x *h2exchange) RemoteAddr() net.Addr { return addrString(x.addr) }

// addrString is an instance address as a net.Addr.
type addrString string

func (a addrString) Network() string { return "tcp" }
func (a addrString) String() string  { return string(a) }

// streamBody is a client's request body as the HTTP/2 transport reads it,
// on a goroutine of its own, while the handler streams the response back.
// The client's body is read by one goroutine at a time and never after
// finish returns: the server reading the client's connection takes it
// back then.
type streamBody struct {
	g *bodyGuard
	r *http.Request
	// onEOF, if set, is called (on the transport's goroutine) when the
	// body's end is read; eofAt is when (a clock.Nanos reading), 0 before.
	onEOF func()
	eofAt atomic.Int64
	// trailer is the outgoing request's: the client's trailers it
	// declares get their values when the body's end is read.
	trailer http.Header
	// stall bounds how long the transport may take to come back for
	// more once it has a piece: past it, the instance is taking no more
	// of the body (its flow-control window stays shut) and onStall runs.
	stall   time.Duration
	onStall func()
	wd      *time.Timer

	mu      sync.Mutex
	closed  bool
	reading chan struct{} // closed when the read under way returns; nil when none is
}

func (b *streamBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errBodyDone
	}
	done := make(chan struct{})
	b.reading = done
	if b.wd != nil {
		b.wd.Stop() // the transport came back for more: the instance took the last piece
	}
	b.mu.Unlock()
	n, err := b.g.Read(p)
	if err == io.EOF && b.eofAt.Load() == 0 {
		for k := range b.trailer {
			b.trailer[k] = b.r.Trailer[k]
		}
		b.eofAt.Store(clock.Nanos())
		if b.onEOF != nil {
			b.onEOF()
		}
	}
	b.mu.Lock()
	b.reading = nil
	close(done)
	if n > 0 && err == nil && b.stall > 0 && !b.closed {
		if b.wd == nil {
			b.wd = time.AfterFunc(b.stall, b.onStall)
		} else {
			b.wd.Reset(b.stall)
		}
	}
	b.mu.Unlock()
	return n, err
}

// headTimer is the response head's deadline, armed when the request has
// been sent whole (by the transport's goroutine) and stopped when the head
// arrived or the attempt failed (by the handler's): once stopped it is
// never armed.
type headTimer struct {
	d    time.Duration
	fire func()

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (h *headTimer) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped && h.t == nil {
		h.t = time.AfterFunc(h.d, h.fire)
	}
}

// stop stops the timer and reports whether it had fired.
func (h *headTimer) stop() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	return h.t != nil && !h.t.Stop()
}

// Close is the transport's: the body is not read any more.
func (b *streamBody) Close() error {
	b.mu.Lock()
	b.closed = true
	if b.wd != nil {
		b.wd.Stop()
	}
	b.mu.Unlock()
	return nil
}

// finish stops the reading of the body and waits for a read under way.
// A read blocked on a client that sends nothing more returns at its body
// read timeout over HTTP/1.1; other servers' bodies are closed, which
// ends it.
func (b *streamBody) finish() {
	b.mu.Lock()
	b.closed = true
	done := b.reading
	if b.wd != nil {
		b.wd.Stop()
	}
	b.mu.Unlock()
	if done == nil {
		return
	}
	if b.r.ProtoMajor >= 2 {
		b.r.Body.Close() // HTTP/2 bodies: safe beside a read, and ends it
	}
	<-done
}

var errBodyDone = errors.New("request body: the exchange is over")

// idleBody bounds each wait for the next piece of an HTTP/2 response body
// (InstanceReadTimeout): past it the stream is reset and the read fails
// with a timeout.
type idleBody struct {
	rc     io.ReadCloser
	d      time.Duration
	cancel context.CancelFunc
	t      *time.Timer
	fired  atomic.Bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.t == nil {
		b.t = time.AfterFunc(b.d, func() { b.fired.Store(true); b.cancel() })
	} else {
		b.t.Reset(b.d)
	}
	n, err := b.rc.Read(p)
	b.t.Stop()
	if err != nil && err != io.EOF && b.fired.Load() {
		err = fmt.Errorf("no data within %s: %w", b.d, os.ErrDeadlineExceeded)
	}
	return n, err
}

func (b *idleBody) Close() error {
	if b.t != nil {
		b.t.Stop()
	}
	return b.rc.Close()
}
