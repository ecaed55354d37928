package measure

import (
	"sync"
	"time"

	"github.com/vipswap/vipswap/route"
)

// History is how far back a Sampler keeps what the data planes counted:
// one snapshot a second.
const History = 5 * time.Minute

// Sampler keeps one snapshot a second of the data plane's counts over the
// last History, so a switch can be measured from before it happened and a
// canary judged over a sliding window. Its owner calls Take once a second;
// the other methods are safe to call from any goroutine.
type Sampler struct {
	read func(route.Listener) map[string]route.Counts

	mu    sync.Mutex // guards ring, next and active
	ring  []Snapshot // oldest at next once full
	next  int
	start Snapshot // the counts when sampling began: zero
	// active is, per slot, the first snapshot at which its requests
	// were last seen to grow: about when it last answered one, to the
	// second, however long ago.
	active map[string]time.Time
}

// NewSampler returns a sampler that reads the data plane's live counts,
// per slot, with read; it has taken no snapshot yet.
func NewSampler(read func(route.Listener) map[string]route.Counts) *Sampler {
	s := &Sampler{read: read}
	s.start.At = time.Now()
	return s
}

// Live returns the counts now.
func (s *Sampler) Live() Snapshot {
	var c Counts
	for _, l := range route.Listeners {
		c[l] = s.read(l)
	}
	return Snapshot{At: time.Now(), Counts: c}
}

// Take records a snapshot of the live counts.
func (s *Sampler) Take() {
	snap := s.Live()
	size := int(History / time.Second)
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
	for l := range snap.Counts {
		for name := range snap.Counts[l] {
			seen[name] = true
		}
	}
	for name := range seen {
		if snap.Counts.Slot(name).Requests() != prev.Counts.Slot(name).Requests() {
			s.active[name] = snap.At
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

// LastActive returns about when slot last answered a request (to the
// sampling second), or zero if it has not since sampling began.
func (s *Sampler) LastActive(slot string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[slot]
}

// Ordered returns the snapshots kept, oldest first.
func (s *Sampler) Ordered() []Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Snapshot, 0, len(s.ring))
	out = append(out, s.ring[s.next:]...)
	return append(out, s.ring[:s.next]...)
}

// At returns the latest snapshot taken at or before t; the counts when
// sampling began (all zero) if none is that old and the history is not
// full yet; otherwise the oldest kept.
func (s *Sampler) At(t time.Time) Snapshot {
	snaps := s.Ordered()
	best := s.start
	if len(snaps) == int(History/time.Second) {
		best = snaps[0]
	}
	for _, snap := range snaps {
		if snap.At.After(t) {
			break
		}
		best = snap
	}
	return best
}

// Since returns the oldest snapshot taken at or after t, if any.
func (s *Sampler) Since(t time.Time) (Snapshot, bool) {
	for _, snap := range s.Ordered() {
		if !snap.At.Before(t) {
			return snap, true
		}
	}
	return Snapshot{}, false
}
