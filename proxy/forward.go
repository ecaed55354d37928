package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vipswap/vipswap/route"
)

// attemptError is a failed attempt, with the stage it failed at: what
// reached the instance decides whether the request may go elsewhere.
type attemptError struct {
	stage string // "dial", "write" or "read"
	err   error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// forward sends r to an instance of its slot, retrying on another where that
// is safe. On success it returns the response, the connection it arrived on
// (whose watch the caller must stop) and the instance, with the request
// counted in flight on it.
func (p *Proxy) forward(r *http.Request, rq *request) (*http.Response, *upstreamConn, *route.Instance, error) {
	ctx := r.Context()
	var lastErr error
	for n := 1; ; n++ {
		inst, err := p.pick(ctx, rq)
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (after %v)", err, lastErr)
			}
			return nil, nil, nil, err
		}
		if n > 1 {
			p.stats(rq.slot)[rq.l].retries.Add(1)
		}
		inst.Begin(rq.l)
		resp, c, err := p.attempt(ctx, r, rq, inst)
		last := n >= p.opts.Attempts
		if err == nil && (last || !drainingAnswer(r, resp, rq)) {
			return resp, c, inst, nil
		}
		inst.Abandon(rq.l)
		rq.tried = append(rq.tried, inst)
		if err == nil {
			// The instance is shutting down: drop its 503 and try another.
			c.stopWatch()
			c.Close()
			lastErr = fmt.Errorf("instance %s is shutting down", inst.Addr)
			continue
		}
		lastErr = fmt.Errorf("instance %s: %w", inst.Addr, err)
		ae := err.(*attemptError)
		if ae.stage == "dial" && p.opts.OnRefused != nil {
			p.opts.OnRefused(inst)
		}
		if last || ctx.Err() != nil || !retryable(r, rq, ae) {
			return nil, nil, nil, lastErr
		}
	}
}

// attempt sends r to inst once and reads the response head. On success the
// connection's watch is running: cancelling ctx (the client went away)
// interrupts its I/O.
func (p *Proxy) attempt(ctx context.Context, r *http.Request, rq *request, inst *route.Instance) (*http.Response, *upstreamConn, error) {
	c, err := p.conn(ctx, inst, !idempotent(r.Method))
	if err != nil {
		return nil, nil, &attemptError{stage: "dial", err: err}
	}
	c.stopWatch = context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	var body io.Reader
	if rq.body != nil {
		body = rq.body
	}
	if err := writeRequest(c.bw, r, body); err != nil {
		c.stopWatch()
		c.Close()
		return nil, nil, &attemptError{stage: "write", err: err}
	}
	resp, err := readResponse(c.br, r)
	if err != nil {
		c.stopWatch()
		c.Close()
		return nil, nil, &attemptError{stage: "read", err: err}
	}
	return resp, c, nil
}

// readResponse reads the next final response (or a 101), skipping
// informational ones such as 103 Early Hints.
func readResponse(br *bufio.Reader, r *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
}

// retryable reports whether a failed attempt may go to another instance:
// never once the client's body has been read (it cannot be sent again);
// otherwise when the request cannot have been acted on (it was never
// connected or never fully written), or when its method is idempotent.
func retryable(r *http.Request, rq *request, ae *attemptError) bool {
	if !rq.body.untouched() {
		return false
	}
	return ae.stage != "read" || idempotent(r.Method)
}

// drainingAnswer reports whether resp is a 503 from an instance that is
// shutting down (it asks to close the connection, as slotapp does) for a
// request that can safely go elsewhere.
func drainingAnswer(r *http.Request, resp *http.Response, rq *request) bool {
	return resp.StatusCode == http.StatusServiceUnavailable && resp.Close &&
		idempotent(r.Method) && rq.body.untouched()
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
