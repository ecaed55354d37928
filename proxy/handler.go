package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/vipswap/vipswap/route"
)

// handler serves one listener.
type handler struct {
	p  *Proxy
	l  route.Listener
	rp *httputil.ReverseProxy
}

type requestKey struct{}

// request is one client request's routing state, shared by its attempts.
type request struct {
	l         route.Listener
	table     *route.Table
	slot      *route.Slot
	tried     []*route.Instance
	triedBuf  [4]*route.Instance
	inst      *route.Instance // the instance that answered, if any
	holdUntil time.Time       // zero until the request first holds
	body      *bodyGuard      // nil when the request has no body
}

func (p *Proxy) newHandler(l route.Listener, errLog *log.Logger) *handler {
	h := &handler{p: p, l: l}
	h.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    (*forwarder)(p),
		BufferPool:   bufferPool{},
		ErrorHandler: h.fail,
		ErrorLog:     errLog,
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rq := &request{l: h.l, table: h.p.table.Load()}
	rq.tried = rq.triedBuf[:0]
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		rq.body = &bodyGuard{rc: r.Body}
		r.Body = rq.body
	}
	completed := false
	defer func() {
		// Deferred so an aborted response copy (which panics with
		// http.ErrAbortHandler) still ends the in-flight count.
		if rq.inst != nil {
			rq.inst.End(h.l)
		}
		if !completed && r.Context().Err() == nil {
			h.p.failed[h.l].Add(1)
		}
	}()
	h.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestKey{}, rq)))
	completed = true
}

// rewrite builds the outbound request: the instance is chosen per attempt by
// the forwarder; the client's Host header is kept.
func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = pr.In.Host
	pr.Out.Host = pr.In.Host
	prior := pr.In.Header.Values("X-Forwarded-For")
	pr.SetXForwarded()
	if len(prior) > 0 {
		pr.Out.Header.Set("X-Forwarded-For", strings.Join(prior, ", ")+", "+pr.Out.Header.Get("X-Forwarded-For"))
	}
	if rq, ok := pr.In.Context().Value(requestKey{}).(*request); ok && rq.body != nil {
		// Lets the transport replay the body on a fresh connection when
		// nothing of it was sent.
		pr.Out.GetBody = rq.body.rewind
	}
}

// fail answers a request that no instance could take.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	h.p.failed[h.l].Add(1)
	status := http.StatusBadGateway
	var noInst *noInstanceError
	if errors.As(err, &noInst) || errors.Is(err, errTooManyHolding) {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "vipswap: %v\n", err)
}

// bodyGuard wraps a request body to know whether any of it was read, which
// decides whether it may be sent again. Close is a no-op: the server closes
// the real body when the handler returns.
type bodyGuard struct {
	rc   io.ReadCloser
	read bool
}

func (b *bodyGuard) Read(p []byte) (int, error) {
	b.read = true
	return b.rc.Read(p)
}

func (b *bodyGuard) Close() error { return nil }

func (b *bodyGuard) untouched() bool { return b == nil || !b.read }

func (b *bodyGuard) rewind() (io.ReadCloser, error) {
	if b.read {
		return nil, errors.New("request body already sent; it cannot be replayed")
	}
	return b, nil
}

var errTooManyHolding = errors.New("too many requests waiting for an instance")

// noInstanceError says a request found no routable instance within its hold.
type noInstanceError struct {
	l    route.Listener
	slot string
	hold time.Duration
}

func (e *noInstanceError) Error() string {
	if e.slot == "" {
		return fmt.Sprintf("no slot routes %s traffic (waited %s)", e.l, e.hold)
	}
	return fmt.Sprintf("no healthy instance in slot %q for %s (waited %s)", e.slot, e.l, e.hold)
}

// bufferPool recycles the 32 KiB buffers that copy response bodies.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// isDialError reports whether err happened while connecting, so the request
// certainly never reached the instance.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
