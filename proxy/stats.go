package proxy

import (
	"hash/maphash"
	"maps"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
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

// histogram is a route.Histogram of atomics.
type histogram struct {
	buckets [len(route.LatencyBounds) + 1]atomic.Uint64
	sum     atomic.Uint64
}

func (h *histogram) record(d time.Duration) {
	n := max(int64(d), 0)
	i := bucketFrom[bits.Len64(uint64(n))]
	for i < len(latencyNanos) && n > latencyNanos[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sum.Add(uint64(n))
}

func (h *histogram) load() route.Histogram {
	var out route.Histogram
	for i := range h.buckets {
		out.Buckets[i] = h.buckets[i].Load()
	}
	out.Sum = time.Duration(h.sum.Load())
	return out
}

// tally is a route.Tally of atomics.
type tally struct {
	requests, errors atomic.Uint64
}

func (t *tally) record(isError bool) {
	t.requests.Add(1)
	if isError {
		t.errors.Add(1)
	}
}

func (t *tally) load() route.Tally {
	return route.Tally{Requests: t.requests.Load(), Errors: t.errors.Load()}
}

// slotStats counts what one listener sent to one slot. Every field is an
// atomic, so recording a request takes no lock and allocates nothing.
type slotStats struct {
	classes      [6]atomic.Uint64 // answered requests by status class (index 1 to 5)
	latency      histogram
	response     histogram
	total        histogram
	retries      atomic.Uint64
	failed       atomic.Uint64
	cutOff       atomic.Uint64
	instance5xx  atomic.Uint64
	grpc         [route.GRPCCodes]atomic.Uint64
	clientErrors atomic.Uint64
	judged       tally
	judgedTime   histogram
	sources      [route.SourceGroups]tally
	paths        [route.MaxWatchedPaths][route.SourceGroups]tally
	steered      tally
}

// outcome is what one request came to, for its slot's counters.
type outcome struct {
	status int
	// latency, response and total are Counts.Latency's, Response's and
	// Total's measures of the request.
	latency, response, total time.Duration
	failed                   bool // vipswap answered it itself (5xx), or it was cut off
	instance                 bool // the status is the instance's
	cutOff                   bool // the instance broke its response off
	clientError              bool // vipswap answered it with a 4xx for the client's own mistake
	// grpc is the gRPC status the instance answered (its grpc-status), or
	// -1 for none.
	grpc int
	// judged: prod's weights (or a cookie vipswap issued) chose the slot;
	// steered: a pin or a route did. Neither on stage.
	judged, steered bool
	source          int // the client's source group, when judged
	path            int // the watched prefix the path falls under, or -1
}

// record counts one request.
func (s *slotStats) record(o *outcome) {
	if class := o.status / 100; class >= 1 && class <= 5 {
		s.classes[class].Add(1)
	}
	s.total.record(o.total)
	switch {
	case o.clientError:
		s.clientErrors.Add(1)
		return // says nothing of the slot's instances
	case o.failed:
		s.failed.Add(1)
	}
	grpcFault := false
	if o.instance && o.grpc >= 0 {
		s.grpc[min(o.grpc, len(s.grpc)-1)].Add(1)
		grpcFault = route.GRPCServerFault(o.grpc)
	}
	if o.cutOff {
		s.cutOff.Add(1)
	} else if o.instance && (o.status >= 500 || grpcFault) {
		s.instance5xx.Add(1)
	}
	s.latency.record(o.latency)
	s.response.record(o.response)
	isError := o.status >= 500 || o.cutOff || grpcFault
	switch {
	case o.steered:
		s.steered.record(isError)
	case o.judged:
		s.judged.record(isError)
		s.judgedTime.record(o.latency)
		s.sources[o.source].record(isError)
		if o.path >= 0 {
			s.paths[o.path][o.source].record(isError)
		}
	}
}

// sourceSeed keys the hash that puts client networks into source groups,
// so a client cannot choose addresses that share a group with others'.
var sourceSeed = maphash.MakeSeed()

// sourceGroup returns the source group of a client at remote (host:port):
// by the IPv4 /24 or the IPv6 /56 it is in. One customer of a provider
// usually holds a whole /56 (or a few IPv4 addresses of one /24), so many
// addresses of one network count as one source.
func sourceGroup(remote string) int {
	host := remote
	if i := strings.LastIndexByte(remote, ':'); i > 0 && !strings.HasSuffix(remote, "]") {
		host = remote[:i]
	}
	if len(host) > 2 && host[0] == '[' {
		host = host[1 : len(host)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return int(maphash.String(sourceSeed, host) % route.SourceGroups)
	}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return int(maphash.Bytes(sourceSeed, b[:3]) % route.SourceGroups)
	}
	b := a.As16()
	return int(maphash.Bytes(sourceSeed, b[:7]) % route.SourceGroups)
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

// addStats adds counters for a slot name, copying the table. A name
// removed lately and used again starts from zero: what it counted before
// is folded into the retired totals first.
func (p *Proxy) addStats(name string) *[len(route.Listeners)]slotStats {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	old := *p.statsTable.Load()
	if s := old[name]; s != nil {
		return s
	}
	if _, ok := p.retired.Load().recent[name]; ok {
		p.foldLocked(name)
	}
	next := maps.Clone(old)
	s := new([len(route.Listeners)]slotStats)
	next[name] = s
	p.statsTable.Store(&next)
	return s
}

// Counters returns a snapshot of every slot's counts on listener l, by
// slot name; route.NoSlot holds requests that found no slot. A slot
// removed lately keeps its name (and its counts, frozen) for
// retiredFor, then joins route.RetiredSlots with those removed before:
// the sum over every name never goes down.
func (p *Proxy) Counters(l route.Listener) map[string]route.Counts {
	t := *p.statsTable.Load()
	r := p.retired.Load()
	if r.aging(time.Now()) {
		p.statsMu.Lock()
		p.ageLocked(time.Now())
		p.statsMu.Unlock()
		r = p.retired.Load()
	}
	out := make(map[string]route.Counts, len(t)+len(r.recent)+1)
	for name, per := range t {
		out[name] = per[l].load()
	}
	for name, e := range r.recent {
		if _, live := out[name]; !live {
			out[name] = e.stats[l].load()
		}
	}
	if r.total[l].Requests() > 0 || r.total[l].Failed > 0 {
		out[route.RetiredSlots] = r.total[l]
	}
	return out
}

// retiredFor is how long a removed slot's counts keep its name: longer
// than any measurement window (measure.limit) or analysis window open when
// it went.
const retiredFor = 10 * time.Minute

// retiredTable is the counters of slots removed lately, and the totals of
// those removed before. It is replaced, never changed.
type retiredTable struct {
	recent map[string]retiredSlot
	total  [len(route.Listeners)]route.Counts
}

// retiredSlot is a removed slot's counters and when it went.
type retiredSlot struct {
	stats *[len(route.Listeners)]slotStats
	at    time.Time
}

// aging reports whether a slot in r was removed over retiredFor before now.
func (r *retiredTable) aging(now time.Time) bool {
	for _, e := range r.recent {
		if now.Sub(e.at) > retiredFor {
			return true
		}
	}
	return false
}

// retireLocked keeps the counters s of the slot name just removed.
// Called with statsMu held.
func (p *Proxy) retireLocked(name string, s *[len(route.Listeners)]slotStats) {
	if _, ok := p.retired.Load().recent[name]; ok {
		p.foldLocked(name) // removed before, then counted again
	}
	old := p.retired.Load()
	next := &retiredTable{recent: maps.Clone(old.recent), total: old.total}
	if next.recent == nil {
		next.recent = map[string]retiredSlot{}
	}
	next.recent[name] = retiredSlot{stats: s, at: time.Now()}
	p.retired.Store(next)
}

// foldLocked adds the counts of the slot name removed lately to the
// retired totals and forgets its name. Called with statsMu held.
func (p *Proxy) foldLocked(name string) {
	old := p.retired.Load()
	e, ok := old.recent[name]
	if !ok {
		return
	}
	next := &retiredTable{recent: maps.Clone(old.recent), total: old.total}
	delete(next.recent, name)
	for l := range next.total {
		next.total[l] = next.total[l].Add(e.stats[l].load())
	}
	p.retired.Store(next)
}

// ageLocked folds the slots removed over retiredFor before now. Called
// with statsMu held.
func (p *Proxy) ageLocked(now time.Time) {
	for name, e := range p.retired.Load().recent {
		if now.Sub(e.at) > retiredFor {
			p.foldLocked(name)
		}
	}
}

func (s *slotStats) load() route.Counts {
	var c route.Counts
	for i := range s.classes {
		c.Classes[i] = s.classes[i].Load()
	}
	c.Latency = s.latency.load()
	c.Response = s.response.load()
	c.Total = s.total.load()
	c.Retries = s.retries.Load()
	c.Failed = s.failed.Load()
	c.CutOff = s.cutOff.Load()
	c.InstanceErrors = s.instance5xx.Load()
	for i := range c.GRPC {
		c.GRPC[i] = s.grpc[i].Load()
	}
	c.ClientErrors = s.clientErrors.Load()
	c.Judged.Tally = s.judged.load()
	c.Judged.Latency = s.judgedTime.load()
	for i := range s.sources {
		c.Judged.Sources[i] = s.sources[i].load()
	}
	for i := range s.paths {
		for g := range s.paths[i] {
			c.Judged.Paths[i][g] = s.paths[i][g].load()
		}
	}
	c.Steered = s.steered.load()
	return c
}
