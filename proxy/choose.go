package proxy

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"time"

	"github.com/vipswap/vipswap/route"
)

// Affinity keeps a client on one slot of prod across requests.
type Affinity struct {
	// Cookie names the cookie that carries the client's slot; empty turns
	// affinity off. The cookie holds the slot's name signed with the
	// state's affinity key (route.Spec.AffinityKey), so any vipswap
	// sharing the state (another node, a restarted one) reads it the same
	// way, and one a client made up is ignored.
	Cookie string
	// MaxAge is the cookie's lifetime; zero makes it a session cookie.
	MaxAge time.Duration
	// Secure marks the cookie Secure (listeners behind TLS).
	Secure bool
}

// choice says how a request's slot was chosen, which decides what a newer
// table may change about it.
type choice uint8

const (
	byWeight choice = iota // prod's weights, or the listener's one slot
	byCookie               // a valid affinity cookie named a slot that takes traffic
	byRoute                // a version route
	byPin                  // the tester's pin header
)

// pinError answers a pin header that names no slot, is empty, or comes
// more than once: the client's mistake, answered 400.
type pinError struct {
	header string
	values []string
}

func (e *pinError) Error() string {
	switch {
	case len(e.values) > 1:
		return fmt.Sprintf("%s appears %d times; name one slot, once", e.header, len(e.values))
	case e.values[0] == "":
		return fmt.Sprintf("%s is empty; name a slot, or leave the header out", e.header)
	}
	return fmt.Sprintf("%s names slot %q, which does not exist", e.header, e.values[0])
}

// choose picks rq's slot at the start of a request on prod: the pinned
// slot, else a route's (matching rq.path), else the slot of a valid
// affinity cookie while it
// takes traffic, else by weight. Other listeners follow their one slot.
func (p *Proxy) choose(r *http.Request, rq *request) error {
	if rq.l != route.Prod {
		rq.slot = rq.table.Slot(rq.l)
		return nil
	}
	if h := rq.o.PinHeader; h != "" {
		if v, ok := r.Header[h]; ok {
			if len(v) != 1 || v[0] == "" {
				return &pinError{header: h, values: v}
			}
			s := rq.table.Named(v[0])
			if s == nil {
				return &pinError{header: h, values: v}
			}
			rq.how, rq.named, rq.slot = byPin, v[0], s
			return nil
		}
	}
	s, err := rq.table.Routed(rq.path, r.Header)
	if err != nil {
		return err
	}
	if s != nil {
		rq.how, rq.named, rq.slot = byRoute, s.Name, s
		return nil
	}
	if name := rq.o.Affinity.Cookie; name != "" {
		if c, err := r.Cookie(name); err == nil {
			// Only a cookie vipswap signed names a slot: one a client
			// made up is drawn by weight like a new client.
			rq.cookie = rq.table.AffinitySlot(c.Value)
		}
	}
	rq.slot = rq.byWeight()
	return nil
}

// reslot chooses rq's slot again from a newer table: a pinned or routed
// request keeps its slot's name; one chosen by weight keeps its slot while
// that slot still takes traffic, as affinity does.
func (rq *request) reslot() {
	switch rq.how {
	case byPin, byRoute:
		rq.slot = rq.table.Named(rq.named)
		return
	}
	if rq.l != route.Prod {
		rq.slot = rq.table.Slot(rq.l)
		return
	}
	if rq.slot != nil {
		if s := rq.table.Takes(rq.l, rq.slot.Name); s != nil {
			rq.slot = s
			return
		}
	}
	rq.slot = rq.byWeight()
}

// byWeight returns the cookie's slot while it takes prod's traffic, else a
// slot by weight, noting the cookie to write when it changes.
func (rq *request) byWeight() *route.Slot {
	if rq.cookie != "" {
		if s := rq.table.Takes(rq.l, rq.cookie); s != nil {
			rq.how, rq.setCookie = byCookie, ""
			return s
		}
	}
	s := rq.table.Slot(rq.l)
	rq.how = byWeight
	if rq.o.Affinity.Cookie != "" && s != nil && s.Name != rq.cookie {
		rq.setCookie = s.Name
	}
	return s
}

// affinityCookie is the Set-Cookie value that keeps a client on a slot:
// value is the slot's signed cookie value (route.Table.AffinityValue). It
// is Secure when a.Secure says so or the request came over TLS.
func affinityCookie(a Affinity, value string, overTLS bool) string {
	v := a.Cookie + "=" + value + "; Path=/; HttpOnly; SameSite=Lax"
	if a.MaxAge > 0 {
		v += "; Max-Age=" + strconv.Itoa(int(a.MaxAge/time.Second))
	}
	if a.Secure || overTLS {
		v += "; Secure"
	}
	return v
}

// canonicalPin returns the pin header's canonical form, as requests' header
// maps are keyed.
func canonicalPin(h string) string { return textproto.CanonicalMIMEHeaderKey(h) }
