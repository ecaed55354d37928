package h1

import (
	"context"
	"sync"
)

// connKey is the context key under which a connection's requests' context
// holds the connection.
type connKey struct{}

// cancelWatch is the one callback a connection runs when its requests'
// context is cancelled (AfterCancel), kept with the connection so that
// watching a request for cancellation allocates nothing.
type cancelWatch struct {
	mu   sync.Mutex
	ctx  context.Context // the connection's requests' context, nil while it has none
	f    func()          // the callback to run, nil when none is pending
	stop func() bool
}

// begin makes ctx the context watched, ending any watch of the one
// before.
func (w *cancelWatch) begin(ctx context.Context) {
	w.mu.Lock()
	w.ctx, w.f = ctx, nil
	w.mu.Unlock()
}

// end leaves the connection with no context watched (it parks or closes).
func (w *cancelWatch) end() {
	w.mu.Lock()
	w.ctx, w.f = nil, nil
	w.mu.Unlock()
}

// AfterCancel arranges for f to run once ctx is cancelled, and returns a
// function that stops that, reporting whether it did (false: f has
// started, or was stopped before), as context.AfterFunc does.
//
// When ctx is the context of a request a Server is serving over HTTP/1.1,
// nothing is allocated: the connection keeps f, and runs it on the
// goroutine that cancels (the client hung up, or the connection closes),
// so f must not block. One such watch is pending per connection at a
// time; any other ctx, or a second watch, goes to context.AfterFunc.
//
// Unlike context.AfterFunc's, the stop of a watch the connection keeps is
// the connection's: call it once at most. Called again after another watch
// of the connection began, it would stop that one, which then never runs.
func AfterCancel(ctx context.Context, f func()) (stop func() bool) {
	c, _ := ctx.Value(connKey{}).(*conn)
	if c == nil {
		return context.AfterFunc(ctx, f)
	}
	w := &c.watch
	w.mu.Lock()
	if w.ctx != ctx || w.f != nil {
		w.mu.Unlock()
		return context.AfterFunc(ctx, f)
	}
	if ctx.Err() != nil {
		w.mu.Unlock()
		go f()
		return stopped
	}
	w.f = f
	if w.stop == nil {
		w.stop = w.unwatch
	}
	w.mu.Unlock()
	return w.stop
}

// stopped is the stop of a watch whose callback already started.
func stopped() bool { return false }

// unwatch stops the pending callback, if any.
func (w *cancelWatch) unwatch() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	pending := w.f != nil
	w.f = nil
	return pending
}

// fire runs the pending callback, if any: the context was cancelled.
func (w *cancelWatch) fire() {
	w.mu.Lock()
	f := w.f
	w.f = nil
	w.mu.Unlock()
	if f != nil {
		f()
	}
}
