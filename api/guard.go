package api

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/vipswap/vipswap/wire"
)

// guard refuses what a web page could make an operator's browser send to
// the admin API. Browsers attach no token the page does not know, but
// without tokens (the quickstart) every call would otherwise be allowed:
//
//   - A Host that is not an IP address, localhost or a configured name is
//     refused: a DNS-rebinding page (evil.example resolving to 127.0.0.1)
//     reaches the admin address with its own name as Host, and would be
//     same-origin with the API, free to read its answers.
//   - A request with an Origin that is not the admin address itself is
//     refused: browsers send Origin on every cross-origin POST, so a
//     no-cors fetch or a form on another site never gets through.
//   - A change (any method but GET and HEAD) needs Content-Type
//     application/json, which a page can only send cross-origin after a
//     CORS preflight that this server never grants; HTML forms can only
//     send text/plain, urlencoded and multipart bodies.
//
// Command-line clients and the Go client send an IP or localhost Host, no
// Origin, and JSON, so none of this is in their way.
type guard struct {
	hosts map[string]bool // lower-cased names from admin.hosts
	next  http.Handler
}

func newGuard(hosts []string, next http.Handler) *guard {
	g := &guard{hosts: make(map[string]bool, len(hosts)), next: next}
	for _, h := range hosts {
		g.hosts[strings.ToLower(h)] = true
	}
	return g
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := g.check(r); err != nil {
		writeJSON(w, err.Status, wire.ErrorBody{Error: err.Error()})
		return
	}
	g.next.ServeHTTP(w, r)
}

// check returns the refusal of r, or nil.
func (g *guard) check(r *http.Request) *Error {
	if !g.hostAllowed(r.Host) {
		return &Error{Status: http.StatusForbidden, Err: fmt.Errorf(
			"host %q is not allowed: the admin API answers requests for an IP address, localhost, or a name listed in admin.hosts", r.Host)}
	}
	if origins, sent := r.Header["Origin"]; sent && (len(origins) != 1 || !sameOrigin(origins[0], r.Host)) {
		return &Error{Status: http.StatusForbidden, Err: fmt.Errorf(
			"cross-origin request refused: origin %q is not this admin address (%s)", strings.Join(origins, ", "), r.Host)}
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ct := r.Header.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &Error{Status: http.StatusUnsupportedMediaType, Err: fmt.Errorf(
				"changes need Content-Type: application/json (got %q), even with an empty body", ct)}
		}
	}
	return nil
}

// hostAllowed reports whether hostport (a Host header, port optional) names
// an IP address, localhost, or one of the configured names.
func (g *guard) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	host = strings.ToLower(host)
	return host == "localhost" || g.hosts[host]
}

// sameOrigin reports whether origin (an Origin header) is http or https on
// exactly the host and port the request was sent to.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	return strings.EqualFold(u.Host, host)
}
