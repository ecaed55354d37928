package control

import (
	"sync"
	"time"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// sampleHistory is how far back the sampler keeps what the data planes
// counted: one snapshot a second.
const sampleHistory = 5 * time.Minute

// Counts is one snapshot of what a data plane counted since it started, per
// listener and slot.
type Counts [len(route.Listeners)]map[string]route.Counts

// sub returns c minus an earlier snapshot o, per listener and slot.
func (c Counts) sub(o Counts) Counts {
	var out Counts
	for l := range c {
		out[l] = make(map[string]route.Counts, len(c[l]))
		for slot, n := range c[l] {
			out[l][slot] = n.Sub(o[l][slot])
		}
	}
	return out
}

// listener sums l's counts over every slot.
func (c Counts) listener(l route.Listener) route.Counts {
	var sum route.Counts
	for _, n := range c[l] {
		sum = sum.Add(n)
	}
	return sum
}

// slot sums slot's counts over both listeners.
func (c Counts) slot(name string) route.Counts {
	var sum route.Counts
	for l := range c {
		sum = sum.Add(c[l][name])
	}
	return sum
}

// snapshot is the counts at one moment.
type snapshot struct {
	at     time.Time
	counts Counts
}

// sampler keeps one snapshot a second of the data plane's counts over the
// last sampleHistory, so a switch can be measured from before it happened
// and a canary judged over a sliding window. It does no I/O of its own:
// read returns the data plane's live counts.
type sampler struct {
	read func(route.Listener) map[string]route.Counts

	mu    sync.Mutex // guards ring, next and active
	ring  []snapshot // oldest at next once full
	next  int
	start snapshot // the counts when sampling began: zero
	// active is, per slot, the first snapshot at which its requests
	// were last seen to grow: about when it last answered one, to the
	// second, however long ago.
	active map[string]time.Time
}

func newSampler(read func(route.Listener) map[string]route.Counts) *sampler {
	s := &sampler{read: read}
	s.start.at = time.Now()
	return s
}

// live returns the counts now.
func (s *sampler) live() snapshot {
	var c Counts
	for _, l := range route.Listeners {
		c[l] = s.read(l)
	}
	return snapshot{at: time.Now(), counts: c}
}

// take records a snapshot.
func (s *sampler) take() {
	snap := s.live()
	size := int(sampleHistory / time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.start
	if len(s.ring) > 0 {
		prev = s.ring[(s.next+len(s.ring)-1)%len(s.ring)]
	}
	if s.active == nil {
		s.active = make(map[string]time.Time)
	}
	seen := make(map[string]bool, len(s.active))
	for l := range snap.counts {
		for name := range snap.counts[l] {
			seen[name] = true
		}
	}
	for name := range seen {
		if snap.counts.slot(name).Requests() != prev.counts.slot(name).Requests() {
			s.active[name] = snap.at
		}
	}
	for name := range s.active {
		if !seen[name] {
			delete(s.active, name) // a removed slot's counters are gone
		}
	}
	if len(s.ring) < size {
		s.ring = append(s.ring, snap)
		return
	}
	s.ring[s.next] = snap
	s.next = (s.next + 1) % size
}

// lastActive returns about when slot last answered a request (to the
// sampling second), or zero if it has not since vipswap started.
func (s *sampler) lastActive(slot string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[slot]
}

// ordered returns the snapshots, oldest first.
func (s *sampler) ordered() []snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]snapshot, 0, len(s.ring))
	out = append(out, s.ring[s.next:]...)
	return append(out, s.ring[:s.next]...)
}

// at returns the latest snapshot taken at or before t; the counts when
// sampling began (all zero) if none is that old and the history is not
// full yet; otherwise the oldest kept.
func (s *sampler) at(t time.Time) snapshot {
	snaps := s.ordered()
	best := s.start
	if len(snaps) == int(sampleHistory/time.Second) {
		best = snaps[0]
	}
	for _, snap := range snaps {
		if snap.at.After(t) {
			break
		}
		best = snap
	}
	return best
}

// since returns the oldest snapshot taken at or after t, if any.
func (s *sampler) since(t time.Time) (snapshot, bool) {
	for _, snap := range s.ordered() {
		if !snap.at.Before(t) {
			return snap, true
		}
	}
	return snapshot{}, false
}

// Rates returns the per-second request and error rates and latencies of
// each slot (both listeners together) over the last five minutes, oldest
// first, from the sampler's snapshots.
func (c *Controller) Rates() []wire.RateSample {
	snaps := c.samples.ordered()
	out := make([]wire.RateSample, 0, len(snaps))
	for i := 1; i < len(snaps); i++ {
		prev, cur := snaps[i-1], snaps[i]
		secs := cur.at.Sub(prev.at).Seconds()
		if secs <= 0 {
			continue
		}
		diff := cur.counts.sub(prev.counts)
		s := wire.RateSample{Time: cur.at.UTC().Truncate(time.Millisecond), Slots: map[string]wire.SlotRate{}}
		names := map[string]bool{}
		for l := range diff {
			for name := range diff[l] {
				names[name] = true
			}
		}
		for name := range names {
			n := diff.slot(name)
			if name == route.NoSlot && n.Requests() == 0 {
				continue // show "none" only in seconds that had such requests
			}
			s.Slots[name] = wire.SlotRate{
				Requests: float64(n.Requests()) / secs,
				Errors:   float64(n.Errors()) / secs,
				P50:      float64(n.Quantile(0.5)) / float64(time.Millisecond),
				P99:      float64(n.Quantile(0.99)) / float64(time.Millisecond),
			}
		}
		out = append(out, s)
	}
	return out
}
