package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/route"
)

// Options configures a Proxy. Zero values mean the documented defaults.
type Options struct {
	// Attempts bounds how many instances one request is sent to. Zero means 3.
	Attempts int
	// Hold is how long a request waits for a routable instance before it is
	// answered 503. Zero means 2s.
	Hold time.Duration
	// MaxHolding bounds how many requests may hold at once; more are answered
	// 503 at once. Zero means 10000.
	MaxHolding int
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers. Zero means 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections. Zero means 120s.
	IdleTimeout time.Duration
	// AccessLog, if set, logs requests (all, or a sample).
	AccessLog *AccessLog
	// OnRefused, if set, is called when an instance refuses a connection (or
	// the dial fails), so health can take it out at once. It is called on the
	// request path and must not block.
	OnRefused func(*route.Instance)
}

func (o *Options) setDefaults() {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Hold <= 0 {
		o.Hold = 2 * time.Second
	}
	if o.MaxHolding <= 0 {
		o.MaxHolding = 10000
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 120 * time.Second
	}
}

// Proxy is the built-in data plane. Create it with New, publish tables with
// Apply, accept traffic with Serve and stop with Shutdown.
type Proxy struct {
	opts     Options
	table    atomic.Pointer[route.Table]
	dialer   *net.Dialer
	pools    sync.Map // *route.Instance -> *pool
	handlers [len(route.Listeners)]*handler
	holding  atomic.Int64

	statsTable atomic.Pointer[statsTable]
	statsMu    sync.Mutex // serialises adding a slot to statsTable

	mu      sync.Mutex // guards servers and closed
	servers []*h1.Server
	closed  bool
}

// New returns a Proxy with an empty routing table: until the first Apply
// every request holds and then gets a 503.
func New(opts Options) *Proxy {
	opts.setDefaults()
	p := &Proxy{
		opts:   opts,
		dialer: &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
	}
	p.table.Store(route.Build(route.Spec{}))
	p.statsTable.Store(&statsTable{})
	for _, l := range route.Listeners {
		p.handlers[l] = &handler{p: p, l: l}
	}
	return p
}

// Apply publishes t; requests that start afterwards use it. It wakes requests
// holding on the previous table. Apply is O(1) whatever the load. It
// implements the controller's DataPlane interface.
func (p *Proxy) Apply(t *route.Table) error {
	if old := p.table.Swap(t); old != nil && old != t {
		old.Retire()
	}
	return nil
}

// Failed returns how many requests on l failed: vipswap answered them itself
// with a 502 or 503 because no instance could (connection errors, hold
// timeouts), or an instance's response broke off midway. Requests whose
// client went away are not counted.
func (p *Proxy) Failed(l route.Listener) uint64 {
	var n uint64
	for _, s := range *p.statsTable.Load() {
		n += s[l].failed.Load()
	}
	return n
}

// Handler returns the http.Handler of listener l.
func (p *Proxy) Handler(l route.Listener) http.Handler { return p.handlers[l] }

// Serve accepts connections on ln for listener l until Shutdown. It returns
// nil after Shutdown and the accept error otherwise.
func (p *Proxy) Serve(l route.Listener, ln net.Listener) error {
	srv := &h1.Server{
		Handler:           p.handlers[l],
		ReadHeaderTimeout: p.opts.ReadHeaderTimeout,
		IdleTimeout:       p.opts.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.servers = append(p.servers, srv)
	p.mu.Unlock()
	return srv.Serve(ln)
}

// Shutdown stops accepting connections, closes idle ones, and waits until
// every request in flight (upgraded connections included) has finished or ctx
// is done.
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
	// Shutdown does not wait for hijacked (upgraded) connections; the
	// in-flight counters include them.
	err := waitIdle(ctx, p.table.Load())
	p.closeIdle()
	return errors.Join(append(errs, err)...)
}

// waitIdle polls until no instance of t has a request in flight.
func waitIdle(ctx context.Context, t *route.Table) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		busy := false
		for _, l := range route.Listeners {
			for _, s := range t.Slots(l) {
				for _, i := range s.Instances() {
					busy = busy || i.Load() > 0
				}
			}
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
