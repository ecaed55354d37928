package azure

import (
	"sync"
	"time"

	"github.com/vipswap/vipswap/wire"
)

// Tracker keeps what a driver last applied, for status.
type Tracker struct {
	// Name names the plane in status ("azure_lb api-prod-vmss-lb").
	Name string

	mu        sync.Mutex
	rev       uint64
	applied   bool
	err       string
	converged time.Duration
	since     time.Time
}

// Applied records that revision rev shows, having taken took to converge.
func (t *Tracker) Applied(rev uint64, took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.applied || t.err != "" {
		t.since = time.Now().UTC()
	}
	t.rev, t.applied, t.err, t.converged = rev, true, "", took
}

// Failed records that revision rev does not show, and why.
func (t *Tracker) Failed(rev uint64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.applied || t.err != err.Error() {
		t.since = time.Now().UTC()
	}
	t.rev, t.applied, t.err = rev, false, err.Error()
}

// Status is the plane's status.
func (t *Tracker) Status() wire.PlaneStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return wire.PlaneStatus{Name: t.Name, Revision: t.rev, Applied: t.applied, Error: t.err,
		ConvergedSeconds: t.converged.Seconds(), Since: t.since}
}

// Converged returns how long revision rev took to converge, if it is the
// revision last applied (control.Measurer).
func (t *Tracker) Converged(rev uint64) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.converged, t.applied && t.rev == rev
}
