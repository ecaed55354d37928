package armstandin

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// VIP is the stand-in's data plane: a listener on 127.0.0.1 that sends
// each request to an instance of the slot the resources route to, by
// weight. A change takes Delay to show, as Azure's probes and
// configuration roll out seconds after the API answered.
type VIP struct {
	*httptest.Server

	s       *Server
	route   func(s *Server) map[string]int
	proxies map[string]*httputil.ReverseProxy

	mu     sync.Mutex
	delay  time.Duration
	now    map[string]int // in force
	next   map[string]int // what the resources say, in force from at
	at     time.Time
	frozen bool
}

// NewVIP starts a VIP in front of backends (slot -> base URL of one of
// its instances), routing as route computes from the stand-in's
// resources (slot -> weight), each change delay after it was written.
func (s *Server) NewVIP(backends map[string]string, delay time.Duration, route func(s *Server) map[string]int) *VIP {
	v := &VIP{s: s, route: route, delay: delay, proxies: map[string]*httputil.ReverseProxy{}}
	for slot, base := range backends {
		u, err := url.Parse(base)
		if err != nil {
			panic(err)
		}
		v.proxies[slot] = httputil.NewSingleHostReverseProxy(u)
	}
	v.now = route(s)
	v.next = v.now
	s.OnWrite(func(string) { v.changed() })
	v.Server = httptest.NewServer(http.HandlerFunc(v.serve))
	return v
}

// Freeze makes the VIP ignore every change from now on: a load balancer
// that never converges.
func (v *VIP) Freeze() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.frozen = true
}

func (v *VIP) changed() {
	r := v.route(v.s)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.frozen {
		return
	}
	v.settleLocked()
	v.next, v.at = r, time.Now().Add(v.delay)
}

func (v *VIP) settleLocked() {
	if !v.at.IsZero() && !time.Now().Before(v.at) {
		v.now, v.at = v.next, time.Time{}
	}
}

// InForce returns the weights the VIP routes by now.
func (v *VIP) InForce() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.settleLocked()
	return v.now
}

func (v *VIP) serve(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	v.settleLocked()
	weights := v.now
	v.mu.Unlock()
	total := 0
	for _, n := range weights {
		total += n
	}
	if total == 0 {
		http.Error(w, "no healthy backend", http.StatusBadGateway)
		return
	}
	pick := rand.IntN(total)
	for slot, n := range weights {
		if pick < n {
			if p := v.proxies[slot]; p != nil {
				p.ServeHTTP(w, r)
				return
			}
			http.Error(w, "no instance for "+slot, http.StatusBadGateway)
			return
		}
		pick -= n
	}
}
