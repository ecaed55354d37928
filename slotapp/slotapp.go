// Package slotapp helps any Go application take part in a vipswap blue/green
// deployment: it answers the slot-aware health probe and shuts down without
// failing a request.
//
// The probe contract: GET /api/ping?slot=X answers 200 when X is the
// application's own slot and 404 otherwise, so a load balancer that asks for
// the active slot only ever routes to the instances of that slot.
//
// Graceful shutdown: when the context given to Serve ends (typically on
// SIGTERM), the server stops accepting connections, answers 503 with
// "Connection: close" to new requests that arrive on connections already open
// (vipswap retries those elsewhere), lets in-flight requests finish, and
// returns.
//
// To join a slot of a vipswap cluster without being listed in its
// configuration, see the package slotapp/register.
package slotapp

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Ping returns the handler of the probe contract for slot.
func Ping(slot string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if got := r.URL.Query().Get("slot"); got != slot {
			http.Error(w, "not slot "+got+" (this instance is slot "+slot+")", http.StatusNotFound)
			return
		}
		w.Write([]byte("ok\n"))
	})
}

// Option tunes Serve.
type Option func(*options)

type options struct {
	drainTimeout      time.Duration
	readHeaderTimeout time.Duration
}

// WithDrainTimeout bounds how long Serve waits for in-flight requests after
// its context ends. The default is 30s.
func WithDrainTimeout(d time.Duration) Option { return func(o *options) { o.drainTimeout = d } }

// WithReadHeaderTimeout bounds how long a client may take to send request
// headers. The default is 10s.
func WithReadHeaderTimeout(d time.Duration) Option {
	return func(o *options) { o.readHeaderTimeout = d }
}

// Serve serves h on ln until ctx ends, then drains as the package doc
// describes. It returns nil after a clean drain, the drain's error if
// in-flight requests outlived the drain timeout, or the error that stopped
// the server before ctx ended.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opts ...Option) error {
	o := options{drainTimeout: 30 * time.Second, readHeaderTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	var draining atomic.Bool
	srv := &http.Server{
		ReadHeaderTimeout: o.readHeaderTimeout,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				w.Header().Set("Connection", "close")
				http.Error(w, "shutting down", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		}),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	draining.Store(true)
	dctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	err := srv.Shutdown(dctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
