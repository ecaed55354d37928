package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/internal/sockerr"
	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/route"
)

// handler serves one listener.
type handler struct {
	p *Proxy
	l route.Listener
}

// request is one client request's routing state, shared by its attempts.
type request struct {
	o         *Options // the options when the request began
	l         route.Listener
	table     *route.Table
	slot      *route.Slot
	path      route.Path // the canonical path, which routes match
	uri       string     // the request target for the instance: path and query
	tried     []*route.Instance
	triedBuf  [4]*route.Instance
	holdUntil time.Time       // zero until the request first holds
	noHold    bool            // the last instance answered badly or late: fail rather than hold
	fresh     bool            // the next attempt dials a new connection
	freshFor  *route.Instance // the instance whose pooled connection was found dead
	proxied   bool            // the last attempt's connection began with a PROXY header: never pooled
	lastErr   error           // that instance's failure, when noHold
	body      *bodyGuard      // nil when the request has no body
	buffered  buffered        // the body, when read whole before forwarding
	slowRead  bool            // the client took long to take the answer
	status    int             // the instance's answer
	cutOff    bool            // the instance's response broke off
	copy      bool            // a copy of a prod request (Send): marked with ShadowHeader
	grpc      int             // the grpc-status the instance answered, or -1
	how       choice          // how slot was chosen
	named     string          // the pinned or routed slot's name
	cookie    string          // the slot a valid affinity cookie named, if any
	setCookie string          // the slot to write in the affinity cookie, if it changes

	// What the instances' latency is measured from: the request was
	// written whole to the last instance tried (sent), its response head
	// arrived (head), and the time spent waiting on the instance for the
	// response body (bodyWait). Never time spent waiting on the client.
	start, sent, head time.Time
	bodyWait          time.Duration

	// answers is where the instance's answer is read, when the client's
	// connection keeps a store for it (nil: a new answer each time).
	answers *h1.AnswerStore
}

// requests holds request states between requests, so forwarding one
// allocates none.
var requests = sync.Pool{New: func() any { return new(request) }}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.p.active.Add(1)
	defer h.p.active.Add(-1)
	if h.p.challenge(w, r) {
		return // an ACME validation, answered before any routing
	}
	o := h.p.opts.Load()
	if port := o.RedirectPort[h.l]; port != 0 {
		// Not a slot's request: counted on its own.
		h.p.redirected[h.l].Add(1)
		RedirectHTTPS{Port: port}.ServeHTTP(w, r)
		return
	}
	start := clock.Now()
	rq := requests.Get().(*request)
	// Zeroed, then set: a composite literal would be built on the stack
	// first, which grows the stack of an HTTP/2 stream's new goroutine.
	*rq = request{}
	rq.l, rq.table, rq.o, rq.start, rq.grpc = h.l, h.p.table.Load(), o, start, -1
	rq.tried = rq.triedBuf[:0]
	if a, ok := w.(h1.Answers); ok {
		rq.answers = a.Answers() // the instance's answer is read there
	}
	// Registered first, so it runs last, after every use of rq: nothing
	// keeps a request's state past its ServeHTTP.
	defer func() {
		*rq = request{}
		requests.Put(rq)
	}()
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		rq.body = &bodyGuard{rc: r.Body}
	}
	if h.p.looped(r) {
		h.fail(w, r, rq, errLoop, start)
		return
	}
	if err := rq.target(r); err != nil {
		h.fail(w, r, rq, err, start)
		return
	}
	if err := h.p.choose(r, rq); err != nil {
		h.fail(w, r, rq, err, start)
		return
	}
	bp, err := rq.buffer(w, r)
	if err != nil {
		h.fail(w, r, rq, err, start)
		return
	}
	if bp != nil {
		defer bodyBuffers.Put(bp)
	}
	resp, c, inst, err := h.p.forward(r, rq)
	if err != nil {
		h.fail(w, r, rq, err, start)
		return
	}
	// Deferred so an aborted response (http.ErrAbortHandler) still ends the
	// in-flight count and is counted.
	rq.status = resp.StatusCode
	defer h.done(r, rq, inst, start)
	defer inst.End(h.l)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		h.p.tunnel(w, resp, c.(*upstreamConn))
		return
	}
	if tap := h.tap(r, rq, resp); tap != nil {
		// Deferred: a client that went away aborts the response with a
		// panic, and the mirror must still hear of it.
		answered := false
		defer func() { tap.Done(answered && rq.status != 0 && !rq.cutOff, rq.head.Sub(rq.sent)) }()
		h.respond(w, r, resp, c, rq, start)
		answered = true
		return
	}
	h.respond(w, r, resp, c, rq, start)
}

// done counts a request the instance answered. A response that broke off
// counts as failed.
func (h *handler) done(r *http.Request, rq *request, inst *route.Instance, start time.Time) {
	if rq.status == 0 {
		return // respond answered it itself, and counted it
	}
	if rq.status >= 500 || route.GRPCServerFault(rq.grpc) {
		inst.CountError(h.l)
	}
	var failure error
	switch {
	case rq.cutOff && rq.slowRead:
		failure = errSlowReader
	case rq.cutOff:
		failure = errCutOff
	}
	h.count(r, rq, rq.status, inst.Addr, len(rq.tried)+1, start, failure)
}

var errCutOff = errors.New("response cut off by the instance")

// count records an answered request in its slot's counters, as failed when
// failure is set (unless the client was at fault), and logs it when the
// access log samples it.
func (h *handler) count(r *http.Request, rq *request, status int, instance string, attempts int, start time.Time, failure error) {
	now := clock.Now()
	o := outcome{status: status, total: now.Sub(start), path: -1, grpc: -1}
	// The instances' latency: from the request written whole to the
	// response head; for an answer of vipswap's own, the time it spent
	// trying instances since (or since the request began, if none took
	// it whole).
	from := rq.sent
	if from.IsZero() {
		from = start
	}
	switch {
	case !rq.head.IsZero():
		o.latency = rq.head.Sub(from)
		o.response = o.latency + rq.bodyWait
		o.instance = rq.status == status // the instance's answer, not one of vipswap's
		if o.instance {
			o.grpc = rq.grpc
		}
	default:
		o.latency = now.Sub(from)
		o.response = o.latency
	}
	detail := ""
	if failure != nil {
		detail = failure.Error()
		o.clientError = clientFault(failure)
		o.failed = !o.clientError
		o.cutOff = errors.Is(failure, errCutOff)
	}
	if h.l == route.Prod && rq.slot != nil {
		switch rq.how {
		case byPin, byRoute:
			o.steered = true
		default:
			o.judged = true
			o.source = sourceGroup(r.RemoteAddr)
			o.path = rq.table.Watched(rq.path.Decoded)
		}
	}
	h.p.stats(rq.slot)[h.l].record(&o)
	if a := rq.o.AccessLog; a != nil && a.sampled() {
		a.log(h.l, r, status, rq.slot, instance, attempts, o.total, detail)
	}
}

// clientFault reports whether a failure was the client's doing (its body
// could not be read, it named no slot or several in its pin, its path was
// refused), which is not counted against the slot.
func clientFault(err error) bool {
	var ae *attemptError
	var pin *pinError
	var pe *route.PathError
	return errors.As(err, &pin) || errors.As(err, &pe) || errors.As(err, &ae) && ae.kind == failClient ||
		errors.Is(err, errSlowReader)
}

// fail answers a request that no instance could take. The body says why at
// the level of the slot; instance addresses and socket errors stay inside,
// since prod answers the public.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, rq *request, err error, start time.Time) {
	if r.Context().Err() != nil && !clientFault(err) {
		// The client hung up (or half-closed its side): end the
		// connection without an answer. Returning would let the server
		// write an empty 200 of its own, as if the request had worked.
		panic(http.ErrAbortHandler)
	}
	status, reason := h.failure(rq, err)
	if status >= 500 && r.Method == http.MethodPost && isGRPC(r.Header) {
		// A gRPC client reads the outcome of its call in grpc-status: it
		// gets UNAVAILABLE, the status a gRPC client may retry, in a
		// trailers-only answer. Counted as the failure it is, by the HTTP
		// status it stands for. Only for a POST (every gRPC call is one):
		// the Content-Type is the client's claim, and a GET claiming gRPC
		// would turn a failure into a cacheable, empty 200 that a shared
		// cache in front would serve to everyone.
		hd := w.Header()
		hd.Set("Cache-Control", "no-store")
		hd.Set("Content-Type", "application/grpc")
		hd.Set("Grpc-Status", "14")
		hd.Set("Grpc-Message", grpcMessage("vipswap: "+reason))
		hd.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		h.count(r, rq, status, "", len(rq.tried), start, err)
		return
	}
	if status < 500 {
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, "vipswap: %s\n", reason)
	h.count(r, rq, status, "", len(rq.tried), start, err)
}

// failure returns the status and the public reason for err.
func (h *handler) failure(rq *request, err error) (int, string) {
	slot := "the slot"
	if rq.slot != nil {
		slot = fmt.Sprintf("slot %q", rq.slot.Name)
	}
	var noInst *noInstanceError
	var ae *attemptError
	var be *h1.BodyError
	var pin *pinError
	var path *route.PathError
	switch {
	case errors.Is(err, errLoop):
		return http.StatusLoopDetected, err.Error()
	case errors.As(err, &path):
		return http.StatusBadRequest, path.Error()
	case errors.As(err, &pin):
		return http.StatusBadRequest, pin.Error()
	case errors.As(err, &noInst):
		return http.StatusServiceUnavailable, noInst.Error()
	case errors.Is(err, errTooManyHolding):
		return http.StatusServiceUnavailable, err.Error()
	case !errors.As(err, &ae):
	case ae.kind == failClient && errors.As(err, &be):
		return be.Status, be.Error()
	case ae.kind == failClient:
		return http.StatusBadRequest, "the request body could not be read"
	case ae.kind == failLocal:
		return http.StatusServiceUnavailable, "out of resources to reach " + slot
	case ae.kind == failTimeout, ae.kind == failWrite && sockerr.Timeout(err):
		return http.StatusGatewayTimeout, slot + " did not answer in time"
	case ae.kind == failInvalid:
		return http.StatusBadGateway, slot + " answered with an invalid response"
	case ae.kind == failReset:
		return http.StatusBadGateway, slot + " reset the request without answering"
	}
	return http.StatusBadGateway, fmt.Sprintf("no instance of %s answered (%d tried)", slot, len(rq.tried))
}

var errTooManyHolding = errors.New("too many requests waiting for an instance")

// errLoop answers a request that this very process forwarded already: an
// instance address leads back to one of vipswap's listeners.
var errLoop = errors.New("the request came back to vipswap: an instance address leads to one of its own listeners")

// looped reports whether r already passed through this proxy: its Via
// header carries this process's name.
func (p *Proxy) looped(r *http.Request) bool {
	for _, v := range r.Header["Via"] {
		if strings.Contains(v, p.via[4:]) {
			return true
		}
	}
	return false
}

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
	return fmt.Sprintf("no instance of slot %q is available for %s (waited %s)", e.slot, e.l, e.hold)
}

// buffers recycles the 32 KiB buffers that copy response bodies, and
// smallBuffers the buffers of bodies known to be no larger than
// smallBufferSize.
var (
	buffers      = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, smallBufferSize); return &b }}
)

// smallBufferSize is the largest body copied through a small buffer.
const smallBufferSize = 4 << 10
