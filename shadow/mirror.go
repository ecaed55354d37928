// Package shadow copies a sample of prod's requests to a slot that takes no
// prod traffic and compares its answers with prod's (docs/shadow.md). The
// proxy calls Mirror.Tap on the request path; everything else (the copy,
// the comparison, the counts) happens afterwards on the mirror's own
// goroutines, with bounded queue, connections, memory and time, so prod's
// latency and success never depend on the target.
package shadow

import (
	"context"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// Mirror copies prod requests to the slot of the shadow in force (Set) and
// compares the answers. It implements proxy.Mirror. Create it with New and
// stop it with Close.
type Mirror struct {
	o      Options
	queue  chan *job
	mem    atomic.Int64 // bytes held by copies not yet compared
	peak   atomic.Int64 // the most mem ever held
	cur    atomic.Pointer[run]
	last   atomic.Pointer[run] // the latest run, stopped or not, for its figures
	totals totals              // since the mirror began, for /metrics
	stops  chan stop
	hints  atomic.Pointer[hints]
	busy   atomic.Bool // goroutines wait for a CPU: copies are dropped (watchCPU)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// now is the clock (tests may set it before use).
	now func() time.Time
}

// Sender sends one copy to an instance of the target slot, as prod's
// requests reach that slot's instances: *proxy.Proxy (its Send).
type Sender interface {
	Send(ctx context.Context, r *http.Request, uri string, body []byte, inst *route.Instance) (*proxy.Sent, error)
}

// New returns a running Mirror with no shadow: it copies nothing until Set.
// o.Sender is required.
func New(o Options) *Mirror {
	if o.Sender == nil {
		panic("shadow.New: Options.Sender is nil")
	}
	o.setDefaults()
	m := &Mirror{o: o, queue: make(chan *job, o.QueueSize), stops: make(chan stop, 4), now: time.Now}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.SetHints(o.AffinityCookie)
	for range o.MaxConns {
		m.wg.Go(m.work)
	}
	m.wg.Go(m.stopper)
	if o.BusyWait > 0 {
		m.wg.Go(m.watchCPU)
	}
	return m
}

// hints are prod's routing hints removed from copies by the mirror (the
// proxy's Send removes the pin header).
type hints struct{ cookie string }

// SetHints says which affinity cookie prod's proxy reads now
// (Options.AffinityCookie at first): a reload may change it, and a copy
// must not carry it.
func (m *Mirror) SetHints(cookie string) {
	m.hints.Store(&hints{cookie: cookie})
}

// Close stops the workers and waits for them; copies still queued are
// dropped.
func (m *Mirror) Close() {
	m.cancel()
	m.wg.Wait()
}

// run is one shadow, from its start to its end, and its figures.
type run struct {
	spec          state.Shadow
	methods       map[string]bool
	ignoreFields  fieldSet
	ignoreHeaders map[string]bool
	stopped       atomic.Pointer[string]
	f             figures
}

// Set puts sh in force: nil stops copying; the same shadow (same start)
// goes on with its figures; another begins new ones.
func (m *Mirror) Set(sh *state.Shadow) {
	if sh == nil {
		m.cur.Store(nil)
		return
	}
	if r := m.cur.Load(); r != nil && r.spec.Started.Equal(sh.Started) && r.spec.To == sh.To {
		return
	}
	r := &run{spec: *sh, methods: map[string]bool{}, ignoreHeaders: map[string]bool{}}
	r.spec.Methods = slices.Clone(sh.Methods)
	r.spec.IgnoreFields = mergeLists(m.o.IgnoreFields, sh.IgnoreFields)
	r.spec.IgnoreHeaders = mergeLists(m.o.IgnoreHeaders, sh.IgnoreHeaders)
	for _, x := range sh.Methods {
		r.methods[strings.ToUpper(x)] = true
	}
	r.ignoreFields = newFieldSet(r.spec.IgnoreFields)
	for _, h := range r.spec.IgnoreHeaders {
		r.ignoreHeaders[http.CanonicalHeaderKey(h)] = true
	}
	r.f.init(m.o.Samples)
	m.last.Store(r)
	m.cur.Store(r)
}

func mergeLists(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// Figures returns what the running shadow counted, or nil when none runs.
func (m *Mirror) Figures() *wire.ShadowFigures {
	r := m.cur.Load()
	if r == nil {
		return nil
	}
	return r.figures()
}

// Held returns the bytes held now by copies not yet compared, and the most
// ever held (never above Options.MaxMemory).
func (m *Mirror) Held() (now, peak int64) { return m.mem.Load(), m.peak.Load() }

// Effective returns the ignore lists the running shadow compares with (the
// configuration's and its own), or nils when none runs.
func (m *Mirror) Effective() (fields, headers []string) {
	if r := m.cur.Load(); r != nil {
		return r.spec.IgnoreFields, r.spec.IgnoreHeaders
	}
	return nil, nil
}

// Tap implements proxy.Mirror: it decides whether to copy a prod request,
// and if so captures what the copy needs. It allocates only for a request
// it copies.
func (m *Mirror) Tap(t *route.Table, slot *route.Slot, r *http.Request, uri string, body []byte, whole bool) proxy.MirrorTap {
	ru := m.cur.Load()
	if ru == nil || slot == nil || slot.Name == ru.spec.To || ru.stopped.Load() != nil || !ru.methods[r.Method] {
		return nil
	}
	if rand.IntN(state.Whole) >= ru.spec.PerMille {
		return nil
	}
	if !ru.spec.Until.IsZero() && !m.now().Before(ru.spec.Until) {
		return nil
	}
	if t.Takes(route.Prod, ru.spec.To) != nil {
		return nil // the target takes prod traffic: a copy would land where the original did
	}
	ru.f.sampled.Add(1)
	if m.busy.Load() {
		// Prod's goroutines wait for a CPU: a copy now would take one
		// from them.
		m.drop(ru, dropBusy, 0)
		return nil
	}
	if len(m.queue) >= cap(m.queue) {
		// The workers are behind: this copy would find the queue full
		// when prod's answer is done. Dropped now, it costs prod nothing.
		m.drop(ru, dropQueueFull, 0)
		return nil
	}
	if !whole || len(body) > m.o.BodyLimit {
		m.drop(ru, dropTooLarge, 0)
		return nil
	}
	hdr := copyHeader(r, m.hints.Load().cookie)
	cost := int64(len(body) + len(uri) + headerBytes(hdr))
	if !m.reserve(cost) {
		m.drop(ru, dropMemory, 0)
		return nil
	}
	j := &job{m: m, run: ru, table: t, prodSlot: slot.Name, method: r.Method, uri: uri, host: r.Host,
		remote: r.RemoteAddr, tls: r.TLS, header: hdr, body: slices.Clone(body), cost: cost, tapped: time.Now()}
	j.prod.start(m.o)
	j.prod.m = m // prod's answer, kept while it is short, is held too
	return j
}

// reserve holds n more bytes for copies not yet compared, unless that
// would pass MaxMemory.
func (m *Mirror) reserve(n int64) bool {
	held := m.mem.Add(n)
	if held > m.o.MaxMemory {
		m.mem.Add(-n)
		return false
	}
	for p := m.peak.Load(); held > p && !m.peak.CompareAndSwap(p, held); p = m.peak.Load() {
	}
	return true
}

// drop counts a copy not sent and gives back what it held.
func (m *Mirror) drop(ru *run, why dropReason, cost int64) {
	if cost != 0 {
		m.mem.Add(-cost)
	}
	ru.f.dropped[why].Add(1)
	m.totals.dropped.Add(1)
}

// enqueue hands a copy whose prod answer is done to the workers, or drops
// it when the queue is full: never a wait on the request path.
func (m *Mirror) enqueue(j *job) {
	select {
	case m.queue <- j:
	default:
		j.prod.release()
		m.drop(j.run, dropQueueFull, j.cost)
	}
}

// work sends queued copies, one at a time, until Close.
func (m *Mirror) work() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case j := <-m.queue:
			// The send that woke this worker ran on prod's goroutine,
			// which makes the worker the next to run on its processor,
			// ahead of prod requests already waiting there. Yielding puts
			// the copy behind them: copies use what prod leaves.
			runtime.Gosched()
			m.send(j)
		}
	}
}

// stop is a run the mirror stopped by itself: the shadow started at
// started, and why.
type stop struct {
	started time.Time
	why     string
}

// stopper calls OnStop for each stop the mirror decided, off the workers.
func (m *Mirror) stopper() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case s := <-m.stops:
			if m.o.OnStop != nil {
				m.o.OnStop(s.started, s.why)
			}
		}
	}
}

// copyHeader returns what a copy carries of a prod request's header: the
// client's, less the affinity cookie (prod's routing hint means nothing to
// the target). The proxy's Send makes of it what prod's instance got (no
// hop-by-hop field, no pin header, no client's own shadow mark,
// X-Forwarded-* and Via set by vipswap) and marks it as a copy.
func copyHeader(r *http.Request, cookie string) http.Header {
	out := make(http.Header, len(r.Header))
	for k, vv := range r.Header {
		out[k] = slices.Clone(vv) // the request's own may be reused once it ends
	}
	if vv := out["Cookie"]; cookie != "" && len(vv) > 0 {
		if vv = withoutCookie(vv, cookie); len(vv) > 0 {
			out["Cookie"] = vv
		} else {
			delete(out, "Cookie")
		}
	}
	return out
}

// withoutCookie returns Cookie header values without the cookie name.
func withoutCookie(vv []string, name string) []string {
	var out []string
	for _, v := range vv {
		var keep []string
		for part := range strings.SplitSeq(v, ";") {
			n, _, _ := strings.Cut(strings.TrimSpace(part), "=")
			if n != name && strings.TrimSpace(part) != "" {
				keep = append(keep, strings.TrimSpace(part))
			}
		}
		if len(keep) > 0 {
			out = append(out, strings.Join(keep, "; "))
		}
	}
	return out
}

func headerBytes(h http.Header) int {
	n := 0
	for k, vv := range h {
		for _, v := range vv {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
