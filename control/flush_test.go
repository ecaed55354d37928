package control_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// stuckPlane is a data plane whose Apply hangs once stuck, until freed:
// a load balancer that stopped answering.
type stuckPlane struct {
	mu    sync.Mutex
	stuck chan struct{} // nil: Apply returns at once
}

func (p *stuckPlane) Apply(*route.Table) error {
	p.mu.Lock()
	ch := p.stuck
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return nil
}

func (p *stuckPlane) hang() { p.mu.Lock(); p.stuck = make(chan struct{}); p.mu.Unlock() }

func (p *stuckPlane) free() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stuck != nil {
		close(p.stuck)
		p.stuck = nil
	}
}

// TestSlowPlaneDoesNotStallProbes: while a data plane hangs in Apply, an
// instance's health still goes down and up again (the tables reach the
// planes from the controller's flusher, not from the checker's goroutine
// with the target's lock held).
func TestSlowPlaneDoesNotStallProbes(t *testing.T) {
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() || r.URL.Query().Get("slot") != "blue" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	plane := &stuckPlane{}
	f := newFixture(t, []string{strings.TrimPrefix(srv.URL, "http://")}, []string{slotServer(t, "green")}, plane)
	t.Cleanup(plane.free) // runs first: the controller's goroutines end only once it answers
	f.waitHealthy(t, "blue", 1)

	plane.hang()
	down.Store(true)
	f.waitHealthy(t, "blue", 0)
	down.Store(false)
	f.waitHealthy(t, "blue", 1) // the checker was not held by the hung plane
}

// TestRolloutStatusSaysItWillPause: a step of a plan with pause says so
// before it pauses, so that an operator knows a promote will be wanted.
func TestRolloutStatusSaysItWillPause(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	pause := true
	if _, err := f.ctrl.StartRolloutRequest(context.Background(), wire.RolloutRequest{To: "green", Steps: []float64{10, 100}, Interval: "1h", Pause: &pause}); err != nil {
		t.Fatal(err)
	}
	if st := f.ctrl.RolloutStatus(); !st.Running || !st.PausesAfter || st.Paused {
		t.Fatalf("rollout status %+v; want a running step that pauses after", st)
	}
}
