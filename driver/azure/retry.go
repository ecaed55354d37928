package azure

import (
	"sync"
	"time"

	"github.com/vipswap/vipswap/route"
)

// Retry serialises a driver's applies and, while the newest table is not
// shown (a write that failed, drift, a VIP that did not converge in
// time), applies it again every Every until it is, as the answer to a
// change promises.
type Retry struct {
	// Every is the pause between two attempts. Default 30s.
	Every time.Duration
	// Tracker says whether the newest table shows.
	Tracker *Tracker

	mu      sync.Mutex // held through an apply
	latest  *route.Table
	apply   func(*route.Table) error
	running bool
	stop    chan struct{}
	stopped bool
}

// Apply applies t with apply, and keeps trying in the background if it
// failed.
func (r *Retry) Apply(t *route.Table, apply func(*route.Table) error) error {
	r.mu.Lock()
	r.latest, r.apply = t, apply
	err := apply(t)
	start := err != nil && !r.running && !r.stopped
	if start {
		r.running = true
		if r.stop == nil {
			r.stop = make(chan struct{})
		}
	}
	stop := r.stop
	r.mu.Unlock()
	if start {
		go r.loop(stop)
	}
	return err
}

// Stop ends the retries for good.
func (r *Retry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.stopped = true
		if r.stop != nil {
			close(r.stop)
		}
	}
}

func (r *Retry) loop(stop chan struct{}) {
	every := r.Every
	if every <= 0 {
		every = 30 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		r.mu.Lock()
		st := r.Tracker.Status()
		if st.Applied || r.stopped {
			r.running = false
			r.mu.Unlock()
			return
		}
		if st.Error != ErrFollowing.Error() { // a follower's watch is Follow's
			r.apply(r.latest)
		}
		r.mu.Unlock()
	}
}
