package proxy

import (
	"io"
	"net/http"
	"time"

	"github.com/vipswap/vipswap/route"
)

// ShadowHeader marks a request as a copy of a prod request (package
// shadow sends them): an application may skip side effects for it. A
// client's own is removed from what prod's instances receive, so no client
// can make an application take a real request for a copy.
const ShadowHeader = "X-Vipswap-Shadow"

// Mirror copies a sample of prod's requests elsewhere (package shadow).
// The proxy calls it on the request path: it must not block.
type Mirror interface {
	// Tap is called for a prod request that an instance of slot answered
	// (not an upgrade), before its answer is streamed to the client. uri
	// is the request target the instance got; body is the request body
	// when it was read whole before forwarding (whole reports whether the
	// request's body is entirely in body: true for a request without
	// one), and is reused once the request ends. Tap returns nil when the
	// request is not copied.
	Tap(t *route.Table, slot *route.Slot, r *http.Request, uri string, body []byte, whole bool) MirrorTap
}

// MirrorTap follows the prod answer of one request being copied.
type MirrorTap interface {
	// Response is called with prod's answer before its body is streamed;
	// it returns the body the proxy streams instead (the same bytes, seen
	// on their way).
	Response(resp *http.Response) io.Reader
	// Done is called once the answer has reached the client whole (ok),
	// or did not; latency is the instance's (request sent to response
	// head). The copy goes out from here, on the mirror's own goroutines.
	Done(ok bool, latency time.Duration)
}

// SetMirror makes m copy prod's requests from the next request on; nil
// stops. When none is set, a request pays one atomic load for it.
func (p *Proxy) SetMirror(m Mirror) {
	if m == nil {
		p.mirror.Store(nil)
		return
	}
	p.mirror.Store(&m)
}

// tap asks the mirror, if any, whether to copy a prod request, and gives it
// the answer's head.
func (h *handler) tap(r *http.Request, rq *request, resp *http.Response) MirrorTap {
	mp := h.p.mirror.Load()
	if mp == nil || h.l != route.Prod {
		return nil
	}
	if upgradeType(r.Header) != "" {
		// Asked for an upgrade that prod's instance declined: a copy would
		// ask the target too, which may switch its connection.
		return nil
	}
	whole := rq.body == nil || rq.buffered.b != nil
	t := (*mp).Tap(rq.table, rq.slot, r, rq.uri, rq.buffered.b, whole)
	if t != nil {
		resp.Body = readCloser{t.Response(resp), resp.Body}
	}
	return t
}

// readCloser reads from one reader and closes another.
type readCloser struct {
	io.Reader
	c io.Closer
}

func (rc readCloser) Close() error { return rc.c.Close() }
