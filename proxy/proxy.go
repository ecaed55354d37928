package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/route"
)

// Options configures a Proxy. Zero values mean the documented defaults.
// docs/configuration.md sets each timeout beside HAProxy's and nginx's.
type Options struct {
	// Attempts bounds how many instances one request is sent to. Zero
	// means 3. A connection an instance refused does not count: the
	// request never reached it.
	Attempts int
	// Hold is how long a request waits for a routable instance before it is
	// answered 503. Zero means 2s.
	Hold time.Duration
	// MaxHolding bounds how many requests may hold at once; more are answered
	// 503 at once. Zero means 10000.
	MaxHolding int
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request head, from its first byte. Zero means 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections, and new ones
	// silent that long (a client's pool may hold one it has not used yet).
	// Zero means 120s.
	IdleTimeout time.Duration
	// ClientReadTimeout bounds the wait for each next piece of a request
	// body; beyond it the client gets a 408. Zero means 30s.
	ClientReadTimeout time.Duration
	// RequestBuffer is the largest request body (by its Content-Length)
	// read whole before an instance is picked, within ClientReadTimeout
	// in all; larger bodies, and chunked ones, are streamed to the
	// instance as they arrive. Zero means 64 KiB; negative turns buffering
	// off.
	RequestBuffer int
	// ClientWriteTimeout bounds how long one write to a client may block.
	// Zero means 30s.
	ClientWriteTimeout time.Duration
	// ConnectTimeout bounds connecting to an instance. Zero means 5s.
	ConnectTimeout time.Duration
	// InstanceWriteTimeout bounds how long one write of a request to an
	// instance may block. Zero means 30s.
	InstanceWriteTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an instance's response head
	// once the request was sent; beyond it the client gets a 504. Zero
	// means 60s.
	ResponseHeaderTimeout time.Duration
	// InstanceReadTimeout bounds the wait for each next piece of a response
	// body; beyond it the response is cut off. Zero means 60s.
	InstanceReadTimeout time.Duration
	// MaxConns bounds each listener's client connections. At the limit a
	// new connection takes the place of the one idle the longest (between
	// requests, or silent since accept); only when none is idle does the
	// listener stop accepting until one closes or goes idle. Zero means no
	// limit.
	MaxConns int
	// MaxConnsPerClient bounds the connections one client (an IPv4
	// address, an IPv6 /64) holds on a listener; one more is closed at
	// once. Zero means no limit. Reconfigure changes it for the next
	// connections.
	MaxConnsPerClient int
	// MaxIdleConns bounds the idle keep-alive connections to instances, all
	// instances together. Zero means 10000.
	MaxIdleConns int
	// DisableInstanceKeepAlive sends every request to an instance on a new
	// connection: slower, but no answer can ever be read from a connection
	// a previous request used (for instances known to send bytes beyond
	// their answers).
	DisableInstanceKeepAlive bool
	// MaxHeaderBytes bounds a request head and an instance's response head.
	// Zero means 64 KiB.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the header fields of a request head and of an
	// instance's response head. Zero means 100.
	MaxHeaderFields int
	// HTTP2 bounds HTTP/2 client connections (see h1.HTTP2Limits; zero
	// values mean its defaults): streams per connection, flow-control
	// windows, the ping of a silent connection. Their header lists are
	// bounded by MaxHeaderBytes, their idle time by IdleTimeout, their
	// writes by ClientWriteTimeout and their request bodies by
	// ClientReadTimeout, as HTTP/1.1's.
	HTTP2 HTTP2Limits
	// AccessLog, if set, logs requests (all, or a sample).
	AccessLog *AccessLog
	// Logger, if set, receives what goes wrong outside any one request:
	// accept errors (at most one a second) and handler panics; and, at
	// warn level, connections refused under MaxConnsPerClient and idle
	// ones closed at MaxConns (at most once a second each).
	Logger *slog.Logger
	// Affinity keeps prod's clients on one slot, by cookie.
	Affinity Affinity
	// PinHeader, if set, lets a request on prod name its slot in this
	// header (a tester's pin): it goes there whatever the weights and
	// routes; a name that is no slot is answered 400.
	PinHeader string
	// Upstreams says, by slot name, how the slot's instances are reached:
	// HTTP/1.1 (over TLS or not), or HTTP/2 (h2c, or h2 over TLS). A slot
	// missing here is reached over HTTP/1.1 in cleartext. Reconfigure
	// changes it for the next requests; connections made under settings
	// that changed close once their requests are done.
	Upstreams map[string]*Upstream
	// OnRefused, if set, is called when an instance refuses a connection,
	// so health can take it out at once. It is not called when vipswap
	// itself could not open a socket. It is called on the request path and
	// must not block.
	OnRefused func(*route.Instance)
	// RedirectPort, when set for a listener, makes it answer every request
	// with a 308 to https on that port (RedirectHTTPS) instead of
	// forwarding it; such requests count in Redirected, not in any slot's
	// counters. Reconfigure keeps the ports the proxy started with.
	RedirectPort [len(route.Listeners)]int
	// SendProxyProtocol, by slot name, is the PROXY protocol version (1
	// or 2) written at the start of each connection to the slot's
	// instances, naming the request's client (RemoteAddr) as the source
	// and the instance as the destination. Such a connection carries one
	// request and is closed: pooled, it would name its first client to
	// the instance for the requests of others.
	SendProxyProtocol map[string]int

	// unsafeReuseWithin bounds how long ago a pooled instance
	// connection's last request may have gone out for it to carry a
	// request that may not be sent twice (reuseUnsafeWithin, its
	// default). Tests set it.
	unsafeReuseWithin time.Duration
	// sweepEvery is how often idle instance connections are looked over
	// (sweepEvery, its default). Tests set it.
	sweepEvery time.Duration
}

func (o *Options) setDefaults() {
	setDefault(&o.Attempts, 3)
	setDefault(&o.Hold, 2*time.Second)
	setDefault(&o.MaxHolding, 10000)
	setDefault(&o.ReadHeaderTimeout, 10*time.Second)
	setDefault(&o.IdleTimeout, 120*time.Second)
	setDefault(&o.ClientReadTimeout, 30*time.Second)
	setDefault(&o.ClientWriteTimeout, 30*time.Second)
	if o.RequestBuffer == 0 {
		o.RequestBuffer = 64 << 10
	}
	setDefault(&o.ConnectTimeout, 5*time.Second)
	setDefault(&o.InstanceWriteTimeout, 30*time.Second)
	setDefault(&o.ResponseHeaderTimeout, 60*time.Second)
	setDefault(&o.InstanceReadTimeout, 60*time.Second)
	setDefault(&o.MaxIdleConns, 10000)
	setDefault(&o.MaxHeaderBytes, 64<<10)
	setDefault(&o.MaxHeaderFields, 100)
	setDefault(&o.unsafeReuseWithin, reuseUnsafeWithin)
	setDefault(&o.sweepEvery, sweepEvery)
	if o.PinHeader != "" {
		o.PinHeader = canonicalPin(o.PinHeader)
	}
}

// serverLimits returns the client-side limits for the listeners' servers.
func (o *Options) serverLimits() h1.Limits {
	return h1.Limits{
		ReadHeaderTimeout: o.ReadHeaderTimeout, IdleTimeout: o.IdleTimeout,
		BodyReadTimeout: o.ClientReadTimeout, WriteTimeout: o.ClientWriteTimeout,
		MaxHeaderBytes: o.MaxHeaderBytes, MaxHeaderFields: o.MaxHeaderFields,
		MaxConnsPerClient: o.MaxConnsPerClient, HTTP2Limits: o.HTTP2,
	}
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Proxy is the built-in data plane. Create it with New, publish tables with
// Apply, accept traffic with Serve and stop with Shutdown.
type Proxy struct {
	opts    atomic.Pointer[Options] // replaced whole by Reconfigure
	table   atomic.Pointer[route.Table]
	pools   sync.Map // *route.Instance -> *pool: cleartext HTTP/1.1
	upPools sync.Map // poolKey -> *pool: TLS and HTTP/2
	// closing counts the HTTP/2 connections closing gracefully; closeAll
	// ends their wait (Shutdown).
	closing  sync.WaitGroup
	closeCtx context.Context
	closeAll context.CancelFunc
	idle     atomic.Int64 // idle connections in all pools
	handlers [len(route.Listeners)]*handler
	holding  atomic.Int64
	active   atomic.Int64  // requests being served, tunnels included
	away     chan struct{} // closed at Shutdown's limit: WebSockets close (wsclose.go)
	awayOnce sync.Once
	// via is what this proxy adds to the Via header of the requests it
	// forwards ("1.1 vipswap-5f3a9c1e"), random per process so a request
	// that comes back to the same process is known (a loop).
	via string
	// viaCopy is via followed by the line that marks a copy (copyMark).
	viaCopy string

	statsTable atomic.Pointer[statsTable]
	statsMu    sync.Mutex // serialises changes of statsTable
	// retired holds the counters of slots removed lately, and what those
	// removed before counted (stats.go), so that no total goes down.
	retired atomic.Pointer[retiredTable]

	redirected [len(route.Listeners)]atomic.Uint64 // requests answered with a redirect
	// challenges answers ACME HTTP-01 validations (SetChallenges).
	challenges atomic.Pointer[ChallengeHandler]
	// mirror copies a sample of prod's requests (SetMirror); nil: none.
	mirror atomic.Pointer[Mirror]

	mu       sync.Mutex // guards servers, closed and sweeping
	servers  []*h1.Server
	closed   bool
	sweeping bool // sweepIdle runs
}

// New returns a Proxy with an empty routing table: until the first Apply
// every request holds and then gets a 503.
func New(opts Options) *Proxy {
	opts.setDefaults()
	p := &Proxy{
		via:  fmt.Sprintf("1.1 vipswap-%08x", rand.Uint32()),
		away: make(chan struct{}),
	}
	p.viaCopy = p.via + copyMark
	p.opts.Store(&opts)
	p.closeCtx, p.closeAll = context.WithCancel(context.Background())
	p.table.Store(route.Build(route.Spec{}))
	p.statsTable.Store(&statsTable{})
	p.retired.Store(&retiredTable{})
	for _, l := range route.Listeners {
		p.handlers[l] = &handler{p: p, l: l}
	}
	return p
}

// Apply publishes t; requests that start afterwards use it. It wakes requests
// holding on the previous table. Apply is O(1) whatever the load. It
// implements the controller's DataPlane interface.
//
// The connection pools of instances that are no longer members of any slot
// (removed by a reload, or with their slot) are closed and forgotten.
func (p *Proxy) Apply(t *route.Table) error {
	if old := p.table.Swap(t); old != nil && old != t {
		old.Retire()
	}
	p.rangePools(func(inst *route.Instance, _ string, pl *pool) bool {
		if t.IsMember(inst) {
			return false
		}
		pl.close(p, false)
		return true
	})
	p.pruneStats(t)
	return nil
}

// pruneStats retires the counters of slots t no longer names, so slots
// added and removed at runtime do not pile up (see retire). A request
// still finishing on a removed slot counts in a fresh entry, retired by
// the next table.
func (p *Proxy) pruneStats(t *route.Table) {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	old := *p.statsTable.Load()
	var next statsTable
	for name, s := range old {
		if name == route.NoSlot || t.Named(name) != nil {
			continue
		}
		if next == nil {
			next = maps.Clone(old)
		}
		delete(next, name)
		p.retireLocked(name, s)
	}
	if next != nil {
		p.statsTable.Store(&next)
	}
	p.ageLocked(time.Now())
}

// Reconfigure replaces the options while the proxy serves: requests that
// start afterwards, and every connection's next read or write, follow the
// new ones; MaxConnsPerClient and HTTP2 apply to the next connections (a
// client holding more than a lowered cap keeps them; an HTTP/2 connection
// keeps the limits it announced). MaxConns and MaxIdleConns
// keep the values the proxy started with (the listeners size their limits
// once).
func (p *Proxy) Reconfigure(opts Options) {
	opts.setDefaults()
	old := p.opts.Load()
	opts.MaxConns, opts.MaxIdleConns, opts.RedirectPort = old.MaxConns, old.MaxIdleConns, old.RedirectPort
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opts.Store(&opts)
	for _, srv := range p.servers {
		srv.Tune(opts.serverLimits())
	}
	// Connections made under a slot's former protocol or TLS serve no
	// new request: they close once theirs are done.
	p.rangePools(func(inst *route.Instance, up string, pl *pool) bool {
		if up == opts.upstream(inst.Slot).key() {
			return false
		}
		pl.close(p, false)
		return true
	})
}

// Failed returns how many requests on l failed: vipswap answered them itself
// with a 502 or 503 because no instance could (connection errors, hold
// timeouts), or an instance's response broke off midway. Requests whose
// client went away are not counted.
func (p *Proxy) Failed(l route.Listener) uint64 {
	var n uint64
	for _, c := range p.Counters(l) {
		n += c.Failed
	}
	return n
}

// Handler returns the http.Handler of listener l.
func (p *Proxy) Handler(l route.Listener) http.Handler { return p.handlers[l] }

// Serve accepts connections on ln for listener l until Shutdown, with
// HTTP/2 on TLS connections that negotiate it and no h2c. It returns nil
// after Shutdown and the accept error otherwise.
func (p *Proxy) Serve(l route.Listener, ln net.Listener) error {
	return p.ServeWith(l, ln, Protocols{HTTP2: true})
}

// HTTP2Limits bound HTTP/2 client connections: see h1.HTTP2Limits.
type HTTP2Limits = h1.HTTP2Limits

// Protocols say what a listener speaks beside HTTP/1.1.
type Protocols struct {
	// HTTP2 serves HTTP/2 on TLS connections that negotiated "h2" by ALPN
	// (whether it is offered is the listener's tls.Config's NextProtos).
	HTTP2 bool
	// H2C serves HTTP/2 on cleartext connections that open with its
	// client preface (prior knowledge).
	H2C bool
}

// ServeWith is Serve with the protocols the listener speaks.
func (p *Proxy) ServeWith(l route.Listener, ln net.Listener, protos Protocols) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	// Under mu, so a Reconfigure either comes before (and these are its
	// limits) or Tunes this server.
	o := p.opts.Load()
	lim := o.serverLimits()
	srv := &h1.Server{
		Handler: p.handlers[l], MaxConns: o.MaxConns,
		ReadHeaderTimeout: lim.ReadHeaderTimeout, IdleTimeout: lim.IdleTimeout,
		BodyReadTimeout: lim.BodyReadTimeout, WriteTimeout: lim.WriteTimeout,
		MaxHeaderBytes: lim.MaxHeaderBytes, MaxHeaderFields: lim.MaxHeaderFields,
		MaxConnsPerClient: lim.MaxConnsPerClient,
		HTTP2:             protos.HTTP2, H2C: protos.H2C, HTTP2Limits: lim.HTTP2Limits,
	}
	if log := o.Logger; log != nil {
		srv.ErrorLog = func(msg string) { log.Error(msg, "listener", l.String()) }
		srv.Notice = func(msg string) { log.Warn(msg, "listener", l.String()) }
	}
	if !p.sweeping {
		p.sweeping = true
		go p.sweepIdle()
	}
	srv.BadRequest = func(status int) {
		p.stats(nil)[l].record(&outcome{status: status, clientError: true, path: -1})
	}
	p.servers = append(p.servers, srv)
	p.mu.Unlock()
	return srv.Serve(ln)
}

// Redirected returns how many requests listener l answered with a
// redirect to https (Options.RedirectPort).
func (p *Proxy) Redirected(l route.Listener) uint64 { return p.redirected[l].Load() }

// Conns returns how many client connections listener l holds.
func (p *Proxy) Conns(l route.Listener) int { return p.ConnStats(l).Open }

// ConnStats are the counts of a listener's client connections.
type ConnStats struct {
	// Open is how many it holds now.
	Open int
	// Reclaimed counts the idle ones closed to admit new ones at MaxConns.
	Reclaimed uint64
	// Refused counts those closed at once because their client held
	// MaxConnsPerClient.
	Refused uint64
	// Flooded counts the HTTP/2 connections closed for flooding the
	// listener with frames that do no work.
	Flooded uint64
}

// ConnStats returns the counts of listener l's client connections.
func (p *Proxy) ConnStats(l route.Listener) ConnStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var st ConnStats
	for _, srv := range p.servers {
		if srv.Handler == p.handlers[l] {
			st.Open += srv.Conns()
			st.Reclaimed += srv.Reclaimed()
			st.Refused += srv.Refused()
			st.Flooded += srv.Floods()
		}
	}
	return st
}

// Shutdown stops accepting connections, closes idle ones, and waits until
// every request in flight has finished, upgraded connections (WebSockets)
// included whatever instance they are on, or ctx is done.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	servers := p.servers
	p.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, srv := range servers {
		wg.Go(func() { errs[i] = srv.Shutdown(ctx) })
	}
	wg.Wait()
	// The servers do not wait for hijacked (upgraded) connections; the
	// proxy's own count includes them.
	err := p.waitIdle(ctx)
	p.closeIdle()
	return errors.Join(append(errs, err)...)
}

// waitIdle polls until no request is being served.
func (p *Proxy) waitIdle(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for p.active.Load() > 0 {
		select {
		case <-ctx.Done():
			err := fmt.Errorf("%d requests still in flight: %w", p.active.Load(), ctx.Err())
			// WebSockets get a close frame and a moment to answer it
			// (wsclose.go).
			p.goAway()
			grace := time.NewTimer(wsCloseGrace + 500*time.Millisecond)
			defer grace.Stop()
			for p.active.Load() > 0 {
				select {
				case <-grace.C:
					return err
				case <-tick.C:
				}
			}
			return err
		case <-tick.C:
		}
	}
	return nil
}
