package proxy

import (
	"maps"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vipswap/vipswap/route"
)

// latencyNanos are route.LatencyBounds in nanoseconds, for the request path.
var latencyNanos = func() (b [len(route.LatencyBounds)]int64) {
	for i, s := range route.LatencyBounds {
		b[i] = int64(s * float64(time.Second))
	}
	return b
}()

// bucketFrom gives, per bit length of a latency in nanoseconds, the first
// bucket its latency can fall in: a bucket is then found in a step or two.
var bucketFrom = func() (from [65]int) {
	for l := range from {
		lo := int64(0)
		if l > 0 {
			lo = int64(1) << (l - 1) // the smallest latency of that bit length
		}
		i, _ := slices.BinarySearch(latencyNanos[:], lo)
		from[l] = i
	}
	return from
}()

// slotStats counts what one listener sent to one slot. Every field is an
// atomic, so recording a request takes no lock and allocates nothing.
type slotStats struct {
	classes  [6]atomic.Uint64 // answered requests by status class (index 1 to 5)
	buckets  [len(route.LatencyBounds) + 1]atomic.Uint64
	sumNanos atomic.Uint64
	retries  atomic.Uint64
	failed   atomic.Uint64
	cutOff   atomic.Uint64
}

// statsTable maps a slot name to its counters per listener. It is replaced,
// never changed, when a table brings a new slot name.
type statsTable map[string]*[len(route.Listeners)]slotStats

// stats returns the counters of slot (NoSlot for none).
func (p *Proxy) stats(slot *route.Slot) *[len(route.Listeners)]slotStats {
	name := route.NoSlot
	if slot != nil {
		name = slot.Name
	}
	if s := (*p.statsTable.Load())[name]; s != nil {
		return s
	}
	return p.addStats(name)
}

// addStats adds counters for a slot name, copying the table.
func (p *Proxy) addStats(name string) *[len(route.Listeners)]slotStats {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	old := *p.statsTable.Load()
	if s := old[name]; s != nil {
		return s
	}
	next := maps.Clone(old)
	s := new([len(route.Listeners)]slotStats)
	next[name] = s
	p.statsTable.Store(&next)
	return s
}

// record counts one answered request.
func (s *slotStats) record(status int, took time.Duration) {
	if class := status / 100; class >= 1 && class <= 5 {
		s.classes[class].Add(1)
	}
	n := int64(took)
	n = max(n, 0)
	i := bucketFrom[bits.Len64(uint64(n))]
	for i < len(latencyNanos) && n > latencyNanos[i] {
		i++
	}
	s.buckets[i].Add(1)
	s.sumNanos.Add(uint64(max(n, 0)))
}

// Counters returns a snapshot of every slot's counts on listener l, by
// slot name; route.NoSlot holds requests that found no slot.
func (p *Proxy) Counters(l route.Listener) map[string]route.Counts {
	t := *p.statsTable.Load()
	out := make(map[string]route.Counts, len(t))
	for name, per := range t {
		s := &per[l]
		var c route.Counts
		for i := range s.classes {
			c.Classes[i] = s.classes[i].Load()
		}
		for i := range s.buckets {
			c.Buckets[i] = s.buckets[i].Load()
		}
		c.Sum = time.Duration(s.sumNanos.Load())
		c.Retries = s.retries.Load()
		c.Failed = s.failed.Load()
		c.CutOff = s.cutOff.Load()
		out[name] = c
	}
	return out
}
