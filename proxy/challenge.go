package proxy

import (
	"net/http"
	"strings"
)

// challengePath is where ACME servers ask for HTTP-01 validations.
const challengePath = "/.well-known/acme-challenge/"

// ChallengeHandler answers a request before it is routed when it is an
// ACME HTTP-01 validation this process (or, with shared storage, its
// cluster) expects, and reports whether it did.
type ChallengeHandler func(w http.ResponseWriter, r *http.Request) bool

// SetChallenges makes h see the GET requests whose path starts with
// /.well-known/acme-challenge/, before anything routes them; those it
// declines route as usual. It sees them on TLS listeners too: an ACME
// server follows a redirect from port 80 to https. Nil turns it off. It
// is kept across Reconfigure.
func (p *Proxy) SetChallenges(h ChallengeHandler) {
	if h == nil {
		p.challenges.Store(nil)
		return
	}
	p.challenges.Store(&h)
}

// challenge offers r to the ACME challenge handler, if any, and reports
// whether it answered.
func (p *Proxy) challenge(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, challengePath) {
		return false
	}
	h := p.challenges.Load()
	return h != nil && (*h)(w, r)
}
