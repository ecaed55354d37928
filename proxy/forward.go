package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vipswap/vipswap/route"
)

// forwarder is the Proxy seen as the http.RoundTripper of its ReverseProxy:
// each attempt picks an instance from the request's table, and failures that
// are safe to retry go to another instance of the same slot.
type forwarder Proxy

func (f *forwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	p := (*Proxy)(f)
	rq := req.Context().Value(requestKey{}).(*request)
	var lastErr error
	for n := 1; ; n++ {
		inst, err := p.pick(req.Context(), rq)
		if err != nil {
			if lastErr != nil {
				return nil, fmt.Errorf("%w (after %v)", err, lastErr)
			}
			return nil, err
		}
		req.URL.Host = inst.Addr
		if rq.body != nil {
			// ReverseProxy's own body wrapper dies when a failed attempt
			// closes it; the guard survives and knows whether it was read.
			req.Body = rq.body
		}
		inst.Begin(rq.l)
		resp, err := p.transport.RoundTrip(req)
		last := n >= p.opts.Attempts
		if err == nil && (last || !drainingAnswer(req, resp, rq)) {
			rq.inst = inst
			return resp, nil
		}
		inst.Abandon(rq.l)
		rq.tried = append(rq.tried, inst)
		if err == nil {
			// The instance is shutting down: discard its 503 and try another.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			lastErr = fmt.Errorf("instance %s is shutting down", inst.Addr)
			continue
		}
		lastErr = fmt.Errorf("instance %s: %w", inst.Addr, err)
		dial := isDialError(err)
		if dial && p.opts.OnRefused != nil {
			p.opts.OnRefused(inst)
		}
		if last || req.Context().Err() != nil || !retryable(req, rq, dial) {
			return nil, lastErr
		}
	}
}

// retryable reports whether a failed attempt may be sent to another instance:
// always when it never left (a dial error), and for idempotent methods when
// none of the body was consumed.
func retryable(req *http.Request, rq *request, dial bool) bool {
	if !rq.body.untouched() {
		return false
	}
	return dial || idempotent(req.Method)
}

// drainingAnswer reports whether resp is a 503 from an instance that is
// shutting down (it asks to close the connection, as slotapp does) for a
// request that can safely go elsewhere.
func drainingAnswer(req *http.Request, resp *http.Response, rq *request) bool {
	return resp.StatusCode == http.StatusServiceUnavailable && resp.Close &&
		idempotent(req.Method) && rq.body.untouched()
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// pick returns an instance for the next attempt. When the request's slot has
// none left it holds: it waits for a newer table, its own end, or the end of
// its hold time, whichever comes first.
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
			rq.slot = rq.table.Slot(rq.l)
		}
		if rq.slot != nil {
			if inst := rq.slot.Pick(rq.tried); inst != nil {
				return inst, nil
			}
		}
		if timer == nil {
			if rq.holdUntil.IsZero() {
				rq.holdUntil = time.Now().Add(p.opts.Hold)
			}
			if p.holding.Add(1) > int64(p.opts.MaxHolding) {
				p.holding.Add(-1)
				return nil, errTooManyHolding
			}
			timer = time.NewTimer(time.Until(rq.holdUntil))
		}
		select {
		case <-rq.table.Superseded():
			rq.table = p.table.Load()
			rq.slot = nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			e := &noInstanceError{l: rq.l, hold: p.opts.Hold}
			if rq.slot != nil {
				e.slot = rq.slot.Name
			}
			return nil, e
		}
	}
}
