package route

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"math/rand/v2"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Weighted is one slot's share of a listener's traffic in a Spec.
type Weighted struct {
	// Slot is the slot's name.
	Slot string
	// Weight is the slot's relative share; slots with weight zero receive no
	// traffic. A listener whose weights are all zero routes nowhere.
	Weight uint32
}

// Spec is everything Build needs to make a Table.
type Spec struct {
	// Revision is the state revision the table was built from.
	Revision uint64
	// Listeners gives, per listener, the slots it sends traffic to.
	Listeners [numListeners][]Weighted
	// Routable gives, per slot, the instances that may receive new requests
	// (healthy and not drained). A slot missing here has none.
	Routable map[string][]*Instance
	// Members gives, per slot, every instance, routable or not (unhealthy,
	// drained). A data plane keeps what it holds for members (connection
	// pools, server entries) and may release what it holds for others.
	// Routable instances are members even when missing here.
	Members map[string][]*Instance
	// Routes send matching requests to a named slot whatever the weights.
	Routes []Route
	// AffinityKey, if set, signs the affinity cookies the data plane
	// issues (AffinityValue) and checks the ones clients send
	// (AffinitySlot). Without it no cookie names a slot.
	AffinityKey []byte
	// Watch are path prefixes (at most MaxWatchedPaths, matched on
	// segment boundaries) whose judged requests are counted apart, for an
	// analysis that judges paths on their own.
	Watch []string
	// Draws, if set, count each listener's weighted draws across tables:
	// the tables built from one Spec lineage continue one sequence, so a
	// small weight is honoured however often tables are replaced (health
	// flaps, drains). Nil starts a sequence per table.
	Draws *Draws
}

// Draws holds the counters of weighted draws, one per listener.
type Draws [numListeners]atomic.Uint32

// Route sends the requests whose path is PathPrefix or below it (and, when
// Header is set, that carry Header with the value Value) to Slot, whatever
// the listener's weights.
type Route struct {
	// PathPrefix is matched against the request's canonical, decoded path
	// (see CleanPath) on segment boundaries: /api and /api/ both match
	// /api, /api/ and /api/x, not /apix. It must pass CheckPrefix; one
	// that does not never matches.
	PathPrefix string
	// Header, if set, must be present once with value Value (exactly).
	Header, Value string
	// Slot is where matching requests go.
	Slot string
}

// Slot is one slot's routable instances inside a Table. It is immutable.
type Slot struct {
	// Name is the slot's name.
	Name      string
	instances []*Instance
}

// Instances returns the slot's routable instances. The caller must not modify
// the returned slice.
func (s *Slot) Instances() []*Instance { return s.instances }

// split is a listener's weighted choice over slots, with cumulative weights so
// a choice is one atomic increment, a multiplication and a short scan.
type split struct {
	slots []*Slot
	cum   []uint32
	total uint32
	seq   *atomic.Uint32 // requests split so far, for the low-discrepancy draw
}

// golden is 2³² divided by the golden ratio: the points frac(k·φ), k = 1, 2,
// ..., spread over [0, 1) more evenly than random ones (any run of n of them
// puts within O(log n) of the expected count in every interval), so a 20 %
// weight is 20 % over any few hundred consecutive requests, not only on
// average.
const golden = 0x9E3779B9

// Table is an immutable routing snapshot. It is safe for concurrent use by any
// number of goroutines.
type Table struct {
	// Revision is the state revision the table was built from.
	Revision uint64

	listeners  [numListeners]split
	members    map[*Instance]string // every instance, with its slot
	named      map[string]*Slot     // every slot the spec names, by name
	routes     []tableRoute         // most specific first
	watch      []string             // Spec.Watch, without trailing /
	signed     map[string]string    // slot name -> its affinity cookie value
	bySigned   map[string]string    // affinity cookie value -> slot name
	superseded chan struct{}
	retire     sync.Once
}

// Build makes a Table from spec. It copies what it keeps, so the caller may
// reuse spec afterwards.
func Build(spec Spec) *Table {
	t := &Table{Revision: spec.Revision, superseded: make(chan struct{}), members: make(map[*Instance]string)}
	for _, set := range []map[string][]*Instance{spec.Members, spec.Routable} {
		for slot, insts := range set {
			for _, i := range insts {
				t.members[i] = slot
			}
		}
	}
	slots := make(map[string]*Slot)
	slotFor := func(name string) *Slot {
		if s, ok := slots[name]; ok {
			return s
		}
		insts := append([]*Instance(nil), spec.Routable[name]...)
		s := &Slot{Name: name, instances: insts}
		slots[name] = s
		return s
	}
	for l, ws := range spec.Listeners {
		var sp split
		for _, w := range ws {
			if w.Weight == 0 {
				continue
			}
			sp.total += w.Weight
			sp.slots = append(sp.slots, slotFor(w.Slot))
			sp.cum = append(sp.cum, sp.total)
		}
		if len(sp.slots) > 1 {
			sp.seq = new(atomic.Uint32)
			if spec.Draws != nil {
				sp.seq = &spec.Draws[l]
			}
		}
		t.listeners[l] = sp
	}
	for _, set := range []map[string][]*Instance{spec.Members, spec.Routable} {
		for name := range set {
			slotFor(name)
		}
	}
	for _, r := range spec.Routes {
		t.routes = append(t.routes, tableRoute{prefix: r.PathPrefix, key: prefixKey(r.PathPrefix),
			header: textproto.CanonicalMIMEHeaderKey(r.Header), value: r.Value, slot: slotFor(r.Slot)})
	}
	// Longest prefix first; for the same prefix, a route with a header
	// before one without. Equal routes keep the spec's order.
	slices.SortStableFunc(t.routes, func(a, b tableRoute) int {
		if d := len(b.key) - len(a.key); d != 0 {
			return d
		}
		return len(b.header) - len(a.header)
	})
	t.named = slots
	for _, p := range spec.Watch[:min(len(spec.Watch), MaxWatchedPaths)] {
		t.watch = append(t.watch, strings.TrimSuffix(p, "/"))
	}
	if len(spec.AffinityKey) > 0 {
		t.signed = make(map[string]string, len(slots))
		t.bySigned = make(map[string]string, len(slots))
		for name := range slots {
			v := signAffinity(spec.AffinityKey, name)
			t.signed[name], t.bySigned[v] = v, name
		}
	}
	return t
}

// signAffinity returns the affinity cookie value for slot: its name, "~",
// and 128 bits of HMAC-SHA256 over it, base64url-encoded.
func signAffinity(key []byte, slot string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("vipswap affinity\x00"))
	m.Write([]byte(slot))
	return slot + "~" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// AffinityValue returns the affinity cookie value that keeps a client on
// slot, or "" when the table has no affinity key or knows no such slot.
func (t *Table) AffinityValue(slot string) string { return t.signed[slot] }

// AffinitySlot returns the slot an affinity cookie value names, or ""
// unless the value is one this table's key signed. It allocates nothing.
func (t *Table) AffinitySlot(value string) string { return t.bySigned[value] }

// Watched returns the index in Spec.Watch of the first prefix the
// canonical path falls under (on segment boundaries, as routes match), or
// -1.
func (t *Table) Watched(path string) int {
	for i, key := range t.watch {
		if underPrefix(path, key) {
			return i
		}
	}
	return -1
}

// tableRoute is a Route with its header key canonical and its slot
// resolved.
type tableRoute struct {
	prefix, header, value string
	key                   string // prefix without its trailing /
	slot                  *Slot
}

// Routed returns the slot of the most specific route matching a request
// for p with header (keys canonical, as in net/http), or nil when none
// does: the longest prefix that p is or is below, and for the same prefix
// a route whose header matches before one without a header.
//
// A ; in a segment is part of it (/legacy;v=1/x is not below /legacy/).
// Servlet containers drop ;parameters before they read a path, though,
// and /a/..;/b is /b to them: when reading p without its ;parameters
// (those written ;, or also those written %3B) would choose another slot,
// Routed refuses the request with a *PathError rather than guess which
// server the slot runs.
//
// It takes no lock and allocates nothing unless p has a ;.
func (t *Table) Routed(p Path, header map[string][]string) (*Slot, error) {
	s := t.match(p.Decoded, header)
	if len(t.routes) == 0 || strings.IndexByte(p.Decoded, ';') < 0 {
		return s, nil
	}
	for _, escaped := range [2]bool{false, true} {
		q, err := withoutParams(p, escaped)
		if err != nil || t.match(q.Decoded, header) != s {
			return nil, errParams
		}
	}
	return s, nil
}

func (t *Table) match(path string, header map[string][]string) *Slot {
	for i := range t.routes {
		r := &t.routes[i]
		if !underPrefix(path, r.key) {
			continue
		}
		if r.header != "" {
			// Exactly once: a header sent twice ("0", then "1") may read
			// either way to the instance, so it takes no route.
			v := header[r.header]
			if len(v) != 1 || v[0] != r.value {
				continue
			}
		}
		return r.slot
	}
	return nil
}

// Routes returns the table's routes, most specific first.
func (t *Table) Routes() []Route {
	out := make([]Route, len(t.routes))
	for i, r := range t.routes {
		out[i] = Route{PathPrefix: r.prefix, Header: r.header, Value: r.value, Slot: r.slot.Name}
	}
	return out
}

// Named returns the slot called name, whether or not it takes traffic, or
// nil when the table knows no such slot.
func (t *Table) Named(name string) *Slot { return t.named[name] }

// Takes returns the slot called name if it has a share of l's new requests
// (weight above zero), else nil: a client kept on a slot by affinity stays
// there only while this holds.
func (t *Table) Takes(l Listener, name string) *Slot {
	for _, s := range t.listeners[l].slots {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Slot chooses the slot for a new request on l, by weight. It returns nil when
// l routes to no slot.
func (t *Table) Slot(l Listener) *Slot {
	sp := &t.listeners[l]
	switch len(sp.slots) {
	case 0:
		return nil
	case 1:
		return sp.slots[0]
	}
	x := sp.seq.Add(1) * golden // frac(k·φ), scaled to 2³²
	n := uint32(uint64(x) * uint64(sp.total) >> 32)
	for i, c := range sp.cum {
		if n < c {
			return sp.slots[i]
		}
	}
	return sp.slots[len(sp.slots)-1]
}

// Slots returns the slots l sends traffic to, in the order of the Spec. The
// caller must not modify the returned slice.
func (t *Table) Slots(l Listener) []*Slot { return t.listeners[l].slots }

// Weights returns l's slots with their weights (above zero), in the order
// of the Spec: what a data plane outside vipswap (HAProxy) needs to split
// l's traffic the same way.
func (t *Table) Weights(l Listener) []Weighted {
	sp := &t.listeners[l]
	out := make([]Weighted, len(sp.slots))
	prev := uint32(0)
	for i, s := range sp.slots {
		out[i] = Weighted{Slot: s.Name, Weight: sp.cum[i] - prev}
		prev = sp.cum[i]
	}
	return out
}

// IsMember reports whether i is an instance of one of t's slots, routable
// or not.
func (t *Table) IsMember(i *Instance) bool {
	_, ok := t.members[i]
	return ok
}

// Members calls yield for every instance of t, with its slot, in no
// particular order.
func (t *Table) Members(yield func(slot string, i *Instance) bool) {
	for i, slot := range t.members {
		if !yield(slot, i) {
			return
		}
	}
}

// Superseded returns a channel that is closed once a newer Table replaces t.
func (t *Table) Superseded() <-chan struct{} { return t.superseded }

// Retire closes t.Superseded(). The data plane calls it after publishing a
// newer table; calling it more than once is harmless.
func (t *Table) Retire() { t.retire.Do(func() { close(t.superseded) }) }

// Pick chooses a routable instance of s by the power of two choices on
// in-flight load, skipping every instance in avoid (the ones a request has
// already tried). It returns nil when no instance is left. Pick takes no lock
// and allocates nothing.
func (s *Slot) Pick(avoid []*Instance) *Instance {
	insts := s.instances
	n := len(insts)
	switch {
	case n == 0:
		return nil
	case n == 1:
		if contains(avoid, insts[0]) {
			return nil
		}
		return insts[0]
	}
	if len(avoid) == 0 {
		a := rand.IntN(n)
		b := rand.IntN(n - 1)
		if b >= a {
			b++
		}
		x, y := insts[a], insts[b]
		if y.Load() < x.Load() {
			return y
		}
		return x
	}
	// Retries are rare: scan for the least-loaded instance not yet tried,
	// starting at a random offset so ties spread out.
	var best *Instance
	off := rand.IntN(n)
	for k := range n {
		c := insts[(off+k)%n]
		if contains(avoid, c) {
			continue
		}
		if best == nil || c.Load() < best.Load() {
			best = c
		}
	}
	return best
}

// Has reports whether i is one of s's routable instances.
func (s *Slot) Has(i *Instance) bool { return contains(s.instances, i) }

func contains(list []*Instance, i *Instance) bool {
	for _, x := range list {
		if x == i {
			return true
		}
	}
	return false
}
