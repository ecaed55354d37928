package proxy

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/vipswap/vipswap/route"
)

// copyMark is the header line that marks a copy, written after the Via
// line of an HTTP/1.1 request (attempt).
const copyMark = "\r\n" + ShadowHeader + ": copy"

// Send sends a copy of a prod request to inst once, as one attempt of
// prod's own path would: over the proxy's pooled connections, in the
// protocol, TLS and PROXY protocol of inst's slot, within its timeouts,
// with the header prod's instance got (hop-by-hop fields and the pin
// header removed, X-Forwarded-* and Via set from r) and ShadowHeader
// added. It is sent again only when the pooled connection it went out on
// turns out dead, on a new connection to the same instance, as prod's
// requests are; it never goes to another instance, never holds, and counts nothing in the
// instances' or the listeners' figures: prod must not see it. It is for
// package shadow.
//
// r is the request as the client sent it: its Method, Host, Header,
// RemoteAddr and TLS; body is its whole body (nil: none). uri is the
// request target the instance gets. ctx bounds the whole exchange:
// cancelling it interrupts the connection's I/O.
//
// On success the caller reads the response body and then calls Done.
func (p *Proxy) Send(ctx context.Context, r *http.Request, uri string, body []byte, inst *route.Instance) (*Sent, error) {
	o := p.opts.Load()
	rq := &request{o: o, l: route.Stage, uri: uri, copy: true}
	r.ContentLength = int64(len(body))
	if len(body) > 0 {
		rq.buffered.b = body
		rq.body = &bodyGuard{rc: io.NopCloser(&rq.buffered)}
	}
	var (
		resp *http.Response
		c    exchange
		err  error
	)
	up := o.upstream(inst.Slot)
	for {
		if up.h2() {
			resp, c, err = p.attemptH2(ctx, r, rq, inst, up)
		} else {
			resp, c, err = p.attempt(ctx, r, rq, inst, up)
		}
		ae, _ := err.(*attemptError)
		if ae == nil || rq.fresh || !ae.deadPooledConn() || !retryable(r, rq, ae) {
			break
		}
		// The pooled connection was dead (the instance had let it go):
		// that says nothing about the instance. By prod's own rule, the
		// copy goes once more, on a new connection.
		rq.fresh, rq.freshFor = true, inst
		rq.rewind() // with its whole body
	}
	if err != nil {
		return nil, err
	}
	return &Sent{Response: resp, Latency: rq.head.Sub(rq.sent), r: r, c: c, o: o, proxied: rq.proxied}, nil
}

// Sent is the answer to a copy (Send).
type Sent struct {
	// Response is the instance's answer, its body still to read.
	Response *http.Response
	// Latency is the instance's: from the request written whole to the
	// response head, as prod's requests are measured.
	Latency time.Duration
	r       *http.Request
	c       exchange
	o       *Options
	proxied bool
}

// Done ends the exchange: the connection goes back to the pool when the
// body was read to its end (whole) and may carry another request; it is
// closed otherwise (and after a 101: the connection speaks another
// protocol now).
func (s *Sent) Done(whole bool) {
	if whole && !s.proxied && s.Response.StatusCode != http.StatusSwitchingProtocols {
		s.c.release(s.r, s.Response, s.o)
		return
	}
	s.c.stopWatch()
	s.c.Close()
}
