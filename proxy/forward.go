package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/internal/sockerr"
	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/route"
)

// failure says how far an attempt got and whose fault it was: that decides
// whether the request may go to another instance, whether it may hold for
// one, and what the client is answered.
type failure int

const (
	// failDial: the instance could not be reached (refused, unreachable,
	// connect timeout). It never saw the request.
	failDial failure = iota
	// failLocal: vipswap itself could not open a socket (out of
	// descriptors or ports). Nothing is the instance's fault.
	failLocal
	// failStale: a reused connection turned out closed by the instance
	// before it took the request (a late 408).
	failStale
	// failWrite: the request could not be written whole.
	failWrite
	// failClosed: the instance closed the connection after the request,
	// without a byte of answer (it died, or closed an idle connection as
	// the request arrived).
	failClosed
	// failInvalid: the instance answered, but not with valid HTTP/1.1 (or
	// beyond the limits, or switching protocols unasked).
	failInvalid
	// failTimeout: the instance did not answer within the timeout.
	failTimeout
	// failRefused: the instance refused the HTTP/2 stream unprocessed
	// (REFUSED_STREAM, or a GOAWAY below it). It may go anywhere.
	failRefused
	// failReset: the instance reset the HTTP/2 stream after taking it:
	// it may have acted on it, and chose not to answer. Never retried.
	failReset
	// failClient: the client's request body could not be read. The
	// client's fault: it gets a 400 or 408 and nothing is counted against
	// the slot.
	failClient
)

// attemptError is a failed attempt and what kind of failure it was.
type attemptError struct {
	kind   failure
	err    error
	reused bool // on a pooled connection
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// counts reports whether the attempt counts against Options.Attempts: it
// reached an instance, which may have done something with it. A pooled
// connection that broke before any answer does not count: it is retried on
// a new connection to the same instance, where it counts.
func (e *attemptError) counts() bool {
	switch e.kind {
	case failDial, failLocal, failStale, failRefused:
		return false
	case failWrite, failClosed:
		return !e.reused
	}
	return true
}

// deadPooledConn reports whether the attempt failed because the pooled
// connection it used was already dead: it says nothing about the instance.
func (e *attemptError) deadPooledConn() bool {
	return e.reused && (e.kind == failStale || e.kind == failWrite || e.kind == failClosed)
}

// forward sends r to an instance of its slot, retrying on another where that
// is safe. On success it returns the response, the connection it arrived on
// (whose watch the caller must stop) and the instance, with the request
// counted in flight on it.
func (p *Proxy) forward(r *http.Request, rq *request) (*http.Response, exchange, *route.Instance, error) {
	ctx := r.Context()
	var lastErr error
	attempts := 0
	for {
		inst, err := p.pick(ctx, rq)
		if err != nil {
			if lastErr != nil && !errors.As(err, new(*attemptError)) {
				err = fmt.Errorf("%w (after %w)", err, lastErr)
			}
			return nil, nil, nil, err
		}
		if len(rq.tried) > 0 {
			p.stats(rq.slot)[rq.l].retries.Add(1)
		}
		inst.Begin(rq.l)
		var resp *http.Response
		var c exchange
		if up := rq.o.upstream(inst.Slot); up.h2() {
			resp, c, err = p.attemptH2(ctx, r, rq, inst, up)
		} else {
			resp, c, err = p.attempt(ctx, r, rq, inst, up)
		}
		if err == nil {
			attempts++
			if attempts >= rq.o.Attempts || !drainingAnswer(r, resp, rq) {
				return resp, c, inst, nil
			}
			// The instance is shutting down: drop its 503 and try another.
			inst.Abandon(rq.l)
			rq.tried = append(rq.tried, inst)
			c.stopWatch()
			c.Close()
			lastErr = fmt.Errorf("instance %s is shutting down", inst.Addr)
			rq.noHold = false
			rq.rewind()
			continue
		}
		inst.Abandon(rq.l)
		ae := err.(*attemptError)
		// A reused connection the instance had let go says nothing about
		// the instance: try it again on a new connection.
		rq.fresh = ae.deadPooledConn()
		rq.freshFor = inst
		if !rq.fresh {
			rq.tried = append(rq.tried, inst)
		}
		ae.err = fmt.Errorf("instance %s: %w", inst.Addr, ae.err)
		lastErr = ae
		if ae.counts() {
			attempts++
		}
		if ae.kind == failDial && errors.Is(ae.err, syscall.ECONNREFUSED) && rq.o.OnRefused != nil {
			rq.o.OnRefused(inst)
		}
		if attempts >= rq.o.Attempts || ctx.Err() != nil || !retryable(r, rq, ae) {
			if rq.fresh {
				// Tried, though on a connection it had let go: the
				// failure counts it.
				rq.tried = append(rq.tried, inst)
			}
			return nil, nil, nil, ae
		}
		// An instance that answered badly or too late is alive: the slot's
		// other instances may do better, but holding for a new table would
		// only delay the 502 or 504. One that closed a new connection
		// without a word either died (it refuses connections now: hold
		// until it or another is back) or crashed on this very request
		// and lives on (no use holding).
		rq.rewind()
		rq.noHold = ae.kind == failInvalid || ae.kind == failTimeout
		if ae.kind == failClosed && !ae.reused {
			if p.accepts(ctx, inst, rq.o.ConnectTimeout) {
				rq.noHold = true
			} else if rq.o.OnRefused != nil {
				rq.o.OnRefused(inst)
			}
		}
		rq.lastErr = ae
	}
}

// attempt sends r to inst once and reads the response head. On success the
// connection's watch is running: cancelling ctx (the client went away)
// interrupts its I/O.
func (p *Proxy) attempt(ctx context.Context, r *http.Request, rq *request, inst *route.Instance, up *Upstream) (*http.Response, exchange, error) {
	rq.sent, rq.head = time.Time{}, time.Time{} // this attempt's
	began := clock.Now()
	pp := rq.o.SendProxyProtocol[inst.Slot] // a connection of its own, never pooled
	rq.proxied = pp != 0
	// A request without a body (the whole of it in the write buffer, as a
	// rule) has its pooled connection looked at just before it goes out.
	// One that may not be sent twice takes only a connection whose last
	// request went out moments ago: the instance is not closing it for
	// its idle timeout.
	var sentWithin time.Duration
	if rq.body != nil || !idempotent(r.Method) {
		sentWithin = rq.o.unsafeReuseWithin
	}
	c, err := p.conn(ctx, inst, up, rq.fresh || rq.proxied, rq.body == nil, sentWithin, rq.o.ConnectTimeout)
	if err != nil {
		if sockerr.LocalShortage(err) {
			return nil, nil, &attemptError{kind: failLocal, err: err}
		}
		return nil, nil, &attemptError{kind: failDial, err: err}
	}
	if rq.proxied {
		c.bw.Write(proxyHeader(pp, r.RemoteAddr, c.RemoteAddr())) // goes with the request
	}
	c.watch(ctx)
	c.readAhead = false // the head is read to its end, not beyond
	fail := func(kind failure, err error) (*http.Response, exchange, error) {
		c.stopWatch()
		c.Close()
		return nil, nil, &attemptError{kind: kind, err: err, reused: c.reused}
	}
	c.idleWrites(rq.o.InstanceWriteTimeout)
	var body io.Reader
	if rq.body != nil {
		body = rq.body
	}
	limits := h1.ResponseLimits{MaxHeaderBytes: rq.o.MaxHeaderBytes, MaxHeaderFields: rq.o.MaxHeaderFields}
	via := p.via
	if rq.copy {
		via = p.viaCopy // the mark goes out as the line after Via
	}
	err = writeRequestBuffered(c.bw, r, rq.uri, body, via, rq.o.PinHeader)
	if err == nil {
		// The head's deadline first: the last piece of the request goes
		// out and the answer is awaited in one step.
		c.headDeadline(rq.o.ResponseHeaderTimeout)
		err = c.flushAwaiting()
	}
	if err != nil {
		if rq.body != nil && rq.body.err != nil {
			return fail(failClient, rq.body.err)
		}
		if errors.Is(err, errStale) {
			return fail(failStale, err) // nothing went out: a new connection
		}
		// An instance may answer before it has read the whole request (a
		// 413 for a body too large) and close: that answer is its answer.
		rq.sent = clock.Now()
		c.setReadDeadline(rq.sent.Add(min(rq.o.ResponseHeaderTimeout, earlyAnswerWait)))
		if resp, rerr := h1.ReadResponseInto(c.br, r.Method, limits, rq.answers); rerr == nil && resp.StatusCode >= 200 {
			rq.head = clock.Now()
			resp.Close = true
			c.idleReads(rq.o.InstanceReadTimeout)
			return resp, c, nil
		}
		if rq.body != nil && waitingOnClient(rq.body.waited, time.Since(began)) {
			// The instance stopped reading while vipswap waited on the
			// client for the body: its timeout, the client's slowness.
			return fail(failClient, errSlowBody)
		}
		if !c.reused && tlsRefused(err) {
			return fail(failDial, &handshakeError{err: err})
		}
		return fail(failWrite, err)
	}
	rq.sent = c.flushedAt
	resp, err := h1.ReadResponseInto(c.br, r.Method, limits, rq.answers)
	switch {
	case err == nil:
	case sockerr.Timeout(err) && !c.cancelled.Load():
		return fail(failTimeout, fmt.Errorf("no response head within %s", rq.o.ResponseHeaderTimeout))
	case errors.As(err, new(*h1.ResponseError)): // new only here: a variable would be allocated for every answer
		return fail(failInvalid, err)
	case rq.body != nil && waitingOnClient(rq.body.waited, time.Since(began)):
		return fail(failClient, errSlowBody) // as above: it gave up waiting for the body
	case !c.reused && tlsRefused(err):
		// TLS 1.3: the instance refused the handshake (our certificate)
		// after vipswap's side had completed it; it read no request.
		return fail(failDial, &handshakeError{err: err})
	default:
		return fail(failClosed, fmt.Errorf("closed the connection without answering: %w", err))
	}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout && c.reused && idempotent(r.Method) && rq.body.untouched():
		// Most likely the instance timed out the idle connection as the
		// request went out on it. For a request that is safe to repeat,
		// try again on a new connection; any other gets the 408.
		return fail(failStale, errors.New("answered 408 on a connection it had let go"))
	case resp.StatusCode == http.StatusSwitchingProtocols && !upgradeAsked(r, resp):
		return fail(failInvalid, errors.New("invalid response: switched protocols the request did not ask for"))
	}
	rq.head = clock.Now()
	c.idleReads(rq.o.InstanceReadTimeout)
	c.readAhead = len(resp.TransferEncoding) > 0 // chunked (see upstreamConn.Read)
	return resp, c, nil
}

// accepts reports whether inst still takes connections: it connects and
// hangs up at once.
func (p *Proxy) accepts(ctx context.Context, inst *route.Instance, timeout time.Duration) bool {
	d := net.Dialer{Timeout: min(timeout, time.Second)}
	c, err := d.DialContext(ctx, "tcp", inst.Addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// earlyAnswerWait bounds the look for an answer an instance sent before it
// stopped reading the request.
const earlyAnswerWait = time.Second

// retryable reports whether a failed attempt may go to another instance:
// never when the client is at fault or vipswap is out of sockets, never
// once the client's body has been read (it cannot be sent again); always
// when the instance cannot have acted on the request; otherwise when the
// method is idempotent.
func retryable(r *http.Request, rq *request, ae *attemptError) bool {
	switch {
	case ae.kind == failClient, ae.kind == failLocal, ae.kind == failReset:
		return false
	case !rq.body.untouched() && (rq.buffered.b == nil || !idempotent(r.Method) && !nothingSent(ae)):
		// A body read from the client as it went out cannot go again; one
		// read whole before (buffered) can, when the method may be sent
		// twice or none of the request reached the instance.
		return false
	case ae.kind == failDial, ae.kind == failStale, ae.kind == failWrite, ae.kind == failRefused:
		return true
	}
	return idempotent(r.Method)
}

// drainingAnswer reports whether resp is a 503 from an instance that is
// shutting down (it asks to close the connection, as slotapp does) for a
// request that can safely go elsewhere: an idempotent one whose body is
// untouched or was read whole before forwarding (it goes again whole).
func drainingAnswer(r *http.Request, resp *http.Response, rq *request) bool {
	return resp.StatusCode == http.StatusServiceUnavailable && resp.Close &&
		idempotent(r.Method) && (rq.body.untouched() || rq.buffered.b != nil)
}

// nothingSent reports whether an attempt failed before any of its
// request could reach the instance.
func nothingSent(ae *attemptError) bool {
	return ae.kind == failDial || ae.kind == failRefused || ae.kind == failStale
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// upgradeAsked reports whether a 101 answers what the request asked for:
// Connection: upgrade and the protocol the instance switched to.
func upgradeAsked(r *http.Request, resp *http.Response) bool {
	asked := upgradeType(r.Header)
	if asked == "" || forbiddenUpgrade(asked) {
		return false
	}
	got := strings.TrimSpace(resp.Header.Get("Upgrade"))
	for tok := range strings.SplitSeq(asked, ",") {
		if got != "" && strings.EqualFold(strings.TrimSpace(tok), got) {
			return true
		}
	}
	return false
}

// pick returns an instance for the next attempt. When the request's slot has
// none left to try it holds: it waits for a newer table, its own end, or the
// end of its hold time, whichever comes first. A request whose last
// instance answered badly or too late does not hold: it fails with that.
func (p *Proxy) pick(ctx context.Context, rq *request) (*route.Instance, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
			p.holding.Add(-1)
		}
	}()
	for {
		if rq.slot == nil {
			rq.reslot()
		}
		if rq.slot != nil {
			if inst := rq.slot.Pick(rq.tried); inst != nil {
				return inst, nil
			}
			if rq.noHold {
				return nil, rq.lastErr
			}
		}
		if timer == nil {
			if rq.holdUntil.IsZero() {
				rq.holdUntil = time.Now().Add(rq.o.Hold)
			}
			if p.holding.Add(1) > int64(rq.o.MaxHolding) {
				p.holding.Add(-1)
				return nil, errTooManyHolding
			}
			timer = time.NewTimer(time.Until(rq.holdUntil))
		}
		select {
		case <-rq.table.Superseded():
			rq.table = p.table.Load()
			rq.reslot()
			rq.forgetGone()
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			if rq.lastErr != nil && rq.slot != nil && len(rq.tried) > 0 && rq.slot.Has(rq.tried[len(rq.tried)-1]) {
				// The instance that failed it is still routable: say what
				// went wrong with it, not that none was available.
				return nil, rq.lastErr
			}
			e := &noInstanceError{l: rq.l, hold: rq.o.Hold}
			if rq.slot != nil {
				e.slot = rq.slot.Name
			}
			return nil, e
		}
	}
}

// forgetGone drops from the tried list the instances the request's new
// table no longer routes to: if one comes back in a later table (restarted,
// healthy again), the request may try it again. Instances still routable
// stay tried: they failed this request and nothing says they changed.
func (rq *request) forgetGone() {
	kept := rq.tried[:0]
	for _, i := range rq.tried {
		if rq.slot != nil && rq.slot.Has(i) {
			kept = append(kept, i)
		}
	}
	clear(rq.tried[len(kept):])
	rq.tried = kept
}
