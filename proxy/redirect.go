package proxy

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// RedirectHTTPS answers every request with a 308 to the same host and
// path, with the query, on https at Port (left out when 443). The host is
// the request's Host, a client's claim: it must be a host name (letters,
// digits, '-', '.', '_') or an IP address ([IPv6] bracketed), with an
// optional port, and nothing else (no userinfo, path, spaces or control
// characters), else the answer is a 400; a request without a Host (HTTP/1.0)
// is a 400 too. The Location is always https, to that host, with the
// request's own path, so no request can make it point elsewhere.
//
// It is a plain http.Handler, so that what must stay on cleartext (an ACME
// HTTP-01 challenge) can be served by a handler in front of it.
type RedirectHTTPS struct {
	// Port is the TLS listener's port.
	Port int
}

func (rd RedirectHTTPS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, ok := redirectHost(r.Host)
	path := r.URL.EscapedPath()
	if !ok || !strings.HasPrefix(path, "/") {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusBadRequest)
		if !ok {
			w.Write([]byte("this address redirects to https: the request needs a valid Host header\n"))
		} else {
			w.Write([]byte("this address redirects to https: the request needs a path\n"))
		}
		return
	}
	loc := make([]byte, 0, 16+len(host)+len(path)+len(r.URL.RawQuery))
	loc = append(loc, "https://"...)
	loc = append(loc, host...)
	if rd.Port != 443 {
		loc = append(loc, ':')
		loc = strconv.AppendInt(loc, int64(rd.Port), 10)
	}
	loc = append(loc, path...)
	if r.URL.RawQuery != "" {
		loc = append(loc, '?')
		loc = append(loc, r.URL.RawQuery...)
	}
	w.Header().Set("Location", string(loc))
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close") // its body is not read
	}
	w.WriteHeader(http.StatusPermanentRedirect)
}

// redirectHost returns the host of a Host header value, without its port,
// lower-cased, or false when the value is not a valid host[:port].
func redirectHost(h string) (string, bool) {
	if h == "" || len(h) > 300 {
		return "", false
	}
	host := h
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", false
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" || !validPort(h[end+1:]) {
			return "", false
		}
		return "[" + a.String() + "]", true
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if !validPort(h[i:]) {
			return "", false
		}
		host = h[:i]
	}
	if host == "" || len(host) > 253 {
		return "", false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", false
		}
	}
	if host[0] == '.' || host[0] == '-' || strings.Contains(host, "..") {
		return "", false
	}
	return strings.ToLower(host), true
}

// validPort reports whether s is empty or ":" and a port number.
func validPort(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != ':' || len(s) < 2 || len(s) > 6 {
		return false
	}
	n, err := strconv.Atoi(s[1:])
	return err == nil && n >= 0 && n <= 65535 && s[1] != '+' && s[1] != '-'
}
