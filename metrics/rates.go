package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/route"
)

// Window is how much rate history Rates keeps: one sample a second.
const Window = 5 * time.Minute

// Rates samples the data plane's counters once a second and keeps the
// per-slot request and error rates of the last Window.
type Rates struct {
	proxy *proxy.Proxy

	mu      sync.Mutex
	last    map[string]slotTotals
	lastAt  time.Time
	samples []api.RateSample // a ring, oldest at next once full
	next    int
}

type slotTotals struct{ requests, errors uint64 }

// NewRates returns a Rates for p. Call Run to sample.
func NewRates(p *proxy.Proxy) *Rates {
	return &Rates{proxy: p}
}

// Run samples once a second until ctx ends.
func (r *Rates) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	r.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.sample(now)
		}
	}
}

// totals adds up each slot's answered requests and 5xx over both listeners.
func (r *Rates) totals() map[string]slotTotals {
	out := map[string]slotTotals{}
	for _, l := range route.Listeners {
		for slot, c := range r.proxy.Counters(l) {
			t := out[slot]
			t.requests += c.Requests()
			t.errors += c.Classes[5]
			out[slot] = t
		}
	}
	return out
}

func (r *Rates) sample(now time.Time) {
	totals := r.totals()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last != nil {
		secs := now.Sub(r.lastAt).Seconds()
		s := api.RateSample{Time: now.UTC().Truncate(time.Millisecond), Slots: map[string]api.SlotRate{}}
		for slot, t := range totals {
			prev := r.last[slot]
			if slot == proxy.NoSlot && t == prev {
				continue // show "none" only in seconds that had such requests
			}
			s.Slots[slot] = api.SlotRate{
				Requests: float64(t.requests-prev.requests) / secs,
				Errors:   float64(t.errors-prev.errors) / secs,
			}
		}
		size := int(Window / time.Second)
		if len(r.samples) < size {
			r.samples = append(r.samples, s)
		} else {
			r.samples[r.next] = s
			r.next = (r.next + 1) % size
		}
	}
	r.last, r.lastAt = totals, now
}

// Recent returns the samples kept, oldest first.
func (r *Rates) Recent() []api.RateSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]api.RateSample, 0, len(r.samples))
	out = append(out, r.samples[r.next:]...)
	return append(out, r.samples[:r.next]...)
}
