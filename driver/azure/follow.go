package azure

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrFollowing is what a driver's write returns on a node that does not
// lead: another node writes, this one only watches for the change.
var ErrFollowing = errors.New("this node does not lead: it waits to see the leading node's change")

// Follow watches, on a node that does not lead, whether the resource
// shows what the newest table asks, and marks it applied when it does;
// one goroutine at most, never holding up the tables that come after.
type Follow struct {
	// Every is the pause between two reads.
	Every time.Duration
	// Tracker is marked.
	Tracker *Tracker

	mu      sync.Mutex
	match   func(context.Context) (bool, error)
	rev     uint64
	running bool
	stop    chan struct{}
	stopped bool
}

// Want watches for revision rev, which match recognises.
func (f *Follow) Want(rev uint64, match func(context.Context) (bool, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	if f.stop == nil {
		f.stop = make(chan struct{})
	}
	f.match, f.rev = match, rev
	f.Tracker.Failed(rev, ErrFollowing)
	if !f.running {
		f.running = true
		go f.loop(f.stop)
	}
}

// Drop stops watching: this node applied a newer table itself.
func (f *Follow) Drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.match = nil
}

// Stop ends the watch for good.
func (f *Follow) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		if f.stop != nil {
			close(f.stop)
		}
	}
}

func (f *Follow) loop(stop chan struct{}) {
	every := f.Every
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		f.mu.Lock()
		match, rev := f.match, f.rev
		if match == nil {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		ok, err := match(ctx)
		cancel()
		f.mu.Lock()
		if f.rev == rev && f.match != nil {
			switch {
			case err != nil:
				f.Tracker.Failed(rev, err)
			case ok:
				f.Tracker.Applied(rev, 0)
				f.match, f.running = nil, false
				f.mu.Unlock()
				return
			}
		}
		f.mu.Unlock()
	}
}
