package proxy

import (
	"net/http"
	"strings"

	"github.com/vipswap/vipswap/route"
)

// target reads r's request target once, before anything routes it: it
// sets rq.path, r's path made canonical (route.CleanPath), which routes
// match, and rq.uri, what the request line to the instance carries: that
// same path, in origin form, with the query exactly as the client sent
// it. An absolute-form target (GET http://host/p) is forwarded in origin
// form, its host in the Host header; OPTIONS * stays *. A path CleanPath
// refuses is answered 400 with its reason.
//
// A canonical origin-form target, the common case, costs a scan and no
// allocation: rq.uri is r's own.
func (rq *request) target(r *http.Request) error {
	uri := r.RequestURI
	if uri == "" { // a request made in this process, not read from a client
		uri = r.URL.RequestURI()
	}
	if uri == "*" {
		rq.path, rq.uri = route.Path{Decoded: "*", Escaped: "*"}, uri
		return nil
	}
	path, query := uri, ""
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		path, query = uri[:i], uri[i:]
	}
	if !strings.HasPrefix(path, "/") {
		// Absolute form: the path starts at the first / after the
		// authority, and an empty one is / (or *, for OPTIONS: RFC 9112
		// section 3.2.4).
		if i := strings.Index(path, "://"); i >= 0 {
			path = path[i+3:]
			if j := strings.IndexByte(path, '/'); j >= 0 {
				path = path[j:]
			} else {
				path = ""
			}
		}
		if path == "" && r.Method == http.MethodOptions && query == "" {
			rq.path, rq.uri = route.Path{Decoded: "*", Escaped: "*"}, "*"
			return nil
		}
		if path == "" {
			path = "/"
		}
	}
	p, err := route.CleanPath(path)
	if err != nil {
		return err
	}
	rq.path, rq.uri = p, uri
	if len(uri) != len(p.Escaped)+len(query) || uri[:len(p.Escaped)] != p.Escaped {
		rq.uri = p.Escaped + query
	}
	return nil
}
