package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// requestError is a request vipswap refuses to read: status is the answer,
// msg says what is wrong. The connection is closed after the answer.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(msg string) error { return &requestError{http.StatusBadRequest, msg} }

var (
	errHeaderTooLarge = &requestError{http.StatusRequestHeaderFieldsTooLarge, "request headers too large"}
	errTooManyFields  = &requestError{http.StatusRequestHeaderFieldsTooLarge, "too many request header fields"}
)

// limits bound a message head.
type limits struct {
	bytes  int // the whole head, start line included
	fields int // header field lines
}

// head reads lines of a message head, counting them against its limits.
type head struct {
	br     *bufio.Reader
	lim    limits // the limits, for messages
	left   int    // bytes the rest of the head may use
	fields int    // field lines the rest of the head may have
	long   []byte // holds a line longer than br's buffer
	// response makes errors *ResponseError (an instance's answer) rather
	// than a request's 4xx.
	response bool
}

func requestHead(br *bufio.Reader, l limits) head {
	return head{br: br, lim: l, left: l.bytes, fields: l.fields}
}

// tooLarge, tooMany and bad make the error for a head beyond its limits or
// malformed; only then, so reading a good head allocates none.
func (h *head) tooLarge() error {
	if h.response {
		return &ResponseError{Msg: fmt.Sprintf("head larger than %d bytes", h.lim.bytes)}
	}
	return errHeaderTooLarge
}

func (h *head) tooMany() error {
	if h.response {
		return &ResponseError{Msg: fmt.Sprintf("more than %d header fields", h.lim.fields)}
	}
	return errTooManyFields
}

func (h *head) bad(msg string) error {
	if h.response {
		return &ResponseError{Msg: msg}
	}
	return badRequest(msg)
}

// line returns the next line without its line ending, which must be CRLF or
// a bare LF. The slice is valid until the next call. A bare CR anywhere in
// the line is refused: it is how requests are smuggled past parsers that
// disagree about it.
func (h *head) line() ([]byte, error) {
	b, err := h.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		h.long = append(h.long[:0], b...)
		for errors.Is(err, bufio.ErrBufferFull) && len(h.long) <= h.left {
			b, err = h.br.ReadSlice('\n')
			h.long = append(h.long, b...)
		}
		b = h.long
	}
	h.left -= len(b)
	if h.left < 0 {
		return nil, h.tooLarge()
	}
	if err != nil {
		return nil, err
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	if bytes.IndexByte(b, '\r') >= 0 {
		return nil, h.bad("bare CR in the head")
	}
	return b, nil
}

// requestStore is where a connection's requests are read into, one after
// another: the request, its URL, its header map and the slices of the
// fields' values are reused. The strings of its target and of its values
// are new unless they are the same as the last request's: a string is
// never changed (a handler may keep it), only given again for the same
// bytes, so a client that sends the same request again and again costs no
// allocation. The handler may not use the request, its URL or its header
// after ServeHTTP returns.
type requestStore struct {
	base   http.Request // empty but for the connection's context
	req    http.Request
	url    url.URL
	header http.Header
	fields headStore
	target lastString // the last request's target
}

// headStore is where a head's field values go: the slices of the fields'
// first values, taken from firsts' room while it has some, and the string
// of the values, given again when the same bytes come.
type headStore struct {
	firsts []string
	values lastString
}

// str returns b as a string, st's last one when it holds the same bytes;
// a new one when st is nil.
func (st *headStore) str(b []byte) string {
	if st == nil {
		return string(b)
	}
	return st.values.of(b)
}

// lastString is the last string made from some bytes, to give again when
// the same bytes come: a string is never changed, only shared.
type lastString struct{ s string }

// of returns b as a string: the last one when it holds the same bytes (the
// comparison does not allocate), else a new one, kept unless it is longer
// than keepMax (a store is kept with its connection).
func (l *lastString) of(b []byte) string {
	if l.s == string(b) {
		return l.s
	}
	s := string(b)
	if len(s) <= keepMax {
		l.s = s
	}
	return s
}

// keepMax bounds the strings a connection keeps to give again.
const keepMax = 4 << 10

// newRequestStore returns a store for requests with the context ctx.
func newRequestStore(ctx context.Context) *requestStore {
	s := &requestStore{}
	s.begin(ctx)
	return s
}

// begin readies s for a connection's requests, with the context ctx.
func (s *requestStore) begin(ctx context.Context) {
	s.base = *new(http.Request).WithContext(ctx)
}

// end clears s for the pool, keeping its map and slice.
func (s *requestStore) end() {
	s.base, s.req, s.url = http.Request{}, http.Request{}, url.URL{}
	clear(s.header)
	clear(s.fields.firsts[:cap(s.fields.firsts)])
	s.fields.firsts = s.fields.firsts[:0]
	s.fields.values, s.target = lastString{}, lastString{}
}

// readRequest reads one request head from br into s, and returns the
// request with its body reader, which reads from br. It enforces HTTP/1.1
// framing strictly: one way to find where the body ends, or a 4xx/501.
func readRequest(s *requestStore, br *bufio.Reader, l limits, remoteAddr string) (*http.Request, error) {
	h := requestHead(br, l)
	line, err := h.line()
	if err != nil {
		return nil, err
	}
	method, target, proto, ok := splitRequestLine(line)
	if !ok {
		return nil, badRequest("malformed request line")
	}
	minor, err := parseVersion(proto)
	if err != nil {
		return nil, err
	}
	req := &s.req
	*req = s.base
	req.Method = internMethod(method)
	req.Proto, req.ProtoMajor, req.ProtoMinor = internProto(minor), 1, minor
	req.RemoteAddr = remoteAddr
	if req.Method == "" {
		return nil, badRequest("malformed method")
	}
	if req.Method == http.MethodConnect {
		return nil, &requestError{http.StatusNotImplemented, "CONNECT is not supported"}
	}
	if req.URL, req.RequestURI, err = parseTarget(req.Method, s.target.of(target), &s.url); err != nil {
		return nil, err
	}
	if s.header == nil {
		s.header = make(http.Header, 8)
	} else {
		clear(s.header)
	}
	s.fields.firsts = s.fields.firsts[:0]
	if req.Header, err = readHeader(&h, s.header, &s.fields); err != nil {
		return nil, err
	}

	// Host: exactly one on HTTP/1.1; an absolute target overrides it.
	hosts := req.Header["Host"]
	switch {
	case len(hosts) > 1:
		return nil, badRequest("more than one Host header")
	case len(hosts) == 0 && minor == 1:
		return nil, badRequest("missing Host header")
	case len(hosts) == 1:
		if !validHost(hosts[0]) {
			return nil, badRequest("malformed Host header")
		}
		req.Host = hosts[0]
	}
	delete(req.Header, "Host")
	if req.URL.Host != "" {
		req.Host = req.URL.Host
	}
	req.Close = wantsClose(req)
	if err := setBody(req, br); err != nil {
		return nil, err
	}
	return req, nil
}

// splitRequestLine splits "METHOD SP target SP version", one space each.
func splitRequestLine(line []byte) (method, target, proto []byte, ok bool) {
	i := bytes.IndexByte(line, ' ')
	if i <= 0 {
		return nil, nil, nil, false
	}
	rest := line[i+1:]
	j := bytes.IndexByte(rest, ' ')
	if j <= 0 || bytes.IndexByte(rest[j+1:], ' ') >= 0 {
		return nil, nil, nil, false
	}
	return line[:i], rest[:j], rest[j+1:], true
}

// parseVersion returns the minor version of "HTTP/1.0" or "HTTP/1.1".
func parseVersion(proto []byte) (int, error) {
	if len(proto) != 8 || string(proto[:5]) != "HTTP/" || proto[6] != '.' ||
		proto[5] < '0' || proto[5] > '9' || proto[7] < '0' || proto[7] > '9' {
		return 0, badRequest("malformed HTTP version")
	}
	if proto[5] != '1' || proto[7] > '1' {
		return 0, &requestError{http.StatusHTTPVersionNotSupported, "HTTP version not supported: " + string(proto)}
	}
	return int(proto[7] - '0'), nil
}

// internMethod returns method as a string, without allocating for the
// common ones, or "" when it is not a token.
func internMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return http.MethodGet
	case "POST":
		return http.MethodPost
	case "HEAD":
		return http.MethodHead
	case "PUT":
		return http.MethodPut
	case "DELETE":
		return http.MethodDelete
	case "OPTIONS":
		return http.MethodOptions
	case "PATCH":
		return http.MethodPatch
	}
	if !isToken(m) {
		return ""
	}
	return string(m)
}

func internProto(minor int) string {
	if minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// parseTarget parses the request target: origin form ("/path?q"), absolute
// form ("http://host/path") or, for OPTIONS, "*". The URL is u, unless the
// target needs url.ParseRequestURI (an absolute form, a path with escapes
// or with bytes that url.URL keeps a raw form of), which makes one.
func parseTarget(method string, uri string, u *url.URL) (*url.URL, string, error) {
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c == 0x7f {
			return nil, "", badRequest("malformed request target")
		}
	}
	if uri == "*" {
		if method != http.MethodOptions {
			return nil, "", badRequest("request target * is only for OPTIONS")
		}
		*u = url.URL{Path: "*"}
		return u, uri, nil
	}
	if plainOrigin(uri) {
		path, query, asked := strings.Cut(uri, "?")
		*u = url.URL{Path: path, RawQuery: query, ForceQuery: asked && query == ""}
		return u, uri, nil
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil || (u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https") || (u.Scheme != "" && u.Host == "") {
		return nil, "", badRequest("malformed request target")
	}
	return u, uri, nil
}

// plainOrigin reports whether target is an origin form whose path
// url.URL keeps as it came: then its URL is the path and the query as
// they are, as url.ParseRequestURI would make it.
func plainOrigin(target string) bool {
	if len(target) == 0 || target[0] != '/' {
		return false
	}
	for i := 0; i < len(target); i++ {
		c := target[i]
		if c == '?' {
			return true // the query: url.URL keeps it raw
		}
		if !plainPathByte[c] {
			return false
		}
	}
	return true
}

// plainPathByte holds the bytes a path may have for url.URL to keep it as
// it came, with no raw form: unreserved ones, and the reserved ones it
// does not escape in a path. Not '%': an escape is decoded.
var plainPathByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-_.~$&+,/:;=@", byte(c)) >= 0
	}
	return t
}()

// readHeader reads header fields up to the empty line that ends them, into
// hdr (a new map when nil). The slices of the fields' first values, and
// the string of the values, come from st (nil: new ones; see headStore).
// Folded lines (obs-fold) are joined with a space, as RFC 9112 5.2 allows.
func readHeader(h *head, hdr http.Header, st *headStore) (http.Header, error) {
	if hdr == nil {
		hdr = make(http.Header, 8)
	}
	sc := scratches.Get().(*fieldScratch)
	defer scratches.Put(sc)
	p := &sc.p
	p.n = 0            // a head refused midway left its fields
	vals := sc.buf[:0] // the values so far, one after another
	var lastKey string
	for {
		line, err := h.line()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			p.flush(hdr, vals, st)
			return hdr, nil
		}
		if h.fields--; h.fields < 0 {
			return nil, h.tooMany()
		}
		if line[0] == ' ' || line[0] == '\t' {
			if lastKey == "" {
				return nil, h.bad("folded line without a header before it")
			}
			more := trimOWS(line)
			if !validValue(more) {
				return nil, h.bad("invalid character in header " + lastKey)
			}
			vals = p.fold(vals, more)
			continue
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 || !isToken(line[:i]) {
			return nil, h.bad("malformed header line")
		}
		value := trimOWS(line[i+1:])
		key := internHeader(line[:i])
		if !validValue(value) {
			return nil, h.bad("invalid character in header " + key)
		}
		vals = p.add(hdr, vals, st, key, value)
		lastKey = key
	}
}

// fieldScratch is where readHeader gathers a head's fields before it
// copies their values out. Pooled rather than on the stack: two kilobytes
// there would grow the stack of every new goroutine that reads a head (an
// HTTP/2 stream's runs on one of its own), a copy per request.
type fieldScratch struct {
	p   pendingFields
	buf [1024]byte
}

var scratches = sync.Pool{New: func() any { return new(fieldScratch) }}

// pendingFields gathers a head's field values and copies them out in one
// string, with one slice for the keys' first values, rather than a string
// and a slice per field: a head then costs three allocations (the map, the
// string, the slice) whatever its size, up to len(fields) fields at a time.
type pendingFields struct {
	fields [24]struct {
		key        string
		start, end int
		folded     bool
	}
	n int // fields pending
}

// add appends a field to vals, the pending values, first copying out the
// pending ones if there is no room left, and returns vals.
func (p *pendingFields) add(hdr http.Header, vals []byte, st *headStore, key string, value []byte) []byte {
	if p.n == len(p.fields) {
		vals = p.flush(hdr, vals, st)
	}
	f := &p.fields[p.n]
	p.n++
	f.key, f.start, f.folded = key, len(vals), false
	vals = append(vals, value...)
	f.end = len(vals)
	return vals
}

// fold continues the last field's value with an obs-fold line, joined by a
// space (the caller has checked there is a field before it); a value that
// was empty then starts with the folded text.
func (p *pendingFields) fold(vals, more []byte) []byte {
	f := &p.fields[p.n-1]
	vals = append(vals, ' ')
	vals = append(vals, more...)
	f.end, f.folded = len(vals), true
	return vals
}

// flush copies the pending values out of vals into hdr, in the order they
// came, and returns vals emptied. The slices of first values are taken
// from the free room of st, and the values' string is st's (see
// headStore; nil: made).
func (p *pendingFields) flush(hdr http.Header, vals []byte, st *headStore) []byte {
	if p.n == 0 {
		return vals
	}
	all := st.str(vals)
	var firsts []string
	switch {
	case st == nil:
		firsts = make([]string, p.n)
	case cap(st.firsts)-len(st.firsts) >= p.n:
		firsts = st.firsts[len(st.firsts) : len(st.firsts)+p.n]
		st.firsts = st.firsts[:len(st.firsts)+p.n]
	default:
		// A new array for this and later heads; the slices taken from the
		// old one stay where they are.
		st.firsts = make([]string, p.n, max(2*cap(st.firsts), 32))
		firsts = st.firsts
	}
	for i := range p.fields[:p.n] {
		f := &p.fields[i]
		v := all[f.start:f.end]
		if f.folded {
			v = strings.TrimLeft(v, " \t")
		}
		if vv := hdr[f.key]; len(vv) > 0 {
			hdr[f.key] = append(vv, v)
		} else {
			firsts[i] = v
			hdr[f.key] = firsts[i : i+1 : i+1]
		}
		f.key = ""
	}
	p.n = 0
	return vals[:0]
}

// commonHeaders maps the usual spellings of frequent header names to their
// canonical form, so reading them does not allocate.
var commonHeaders = map[string]string{}

func init() {
	for _, k := range []string{"Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language",
		"Connection", "Content-Length", "Content-Type", "Transfer-Encoding", "Cookie", "Authorization",
		"Cache-Control", "Referer", "Origin", "If-None-Match", "If-Modified-Since", "Upgrade", "Expect",
		"X-Forwarded-For", "X-Request-Id", "Te", "Trailer", "Keep-Alive", "Pragma", "Range",
		// What answers carry, as a rule: without them here, each would
		// cost its answer a string.
		"Date", "Server", "Etag", "Last-Modified", "Expires", "Age", "Vary", "Location", "Set-Cookie",
		"Content-Encoding", "Content-Language", "Content-Disposition", "Content-Range", "Accept-Ranges",
		"Retry-After", "Www-Authenticate", "Link", "Alt-Svc", "Via", "Forwarded", "X-Forwarded-Proto",
		"X-Forwarded-Host", "Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
		"Access-Control-Allow-Origin", "Content-Security-Policy", "If-Match", "If-Unmodified-Since",
		"If-Range", "Grpc-Status", "Grpc-Message"} {
		commonHeaders[k] = k
		commonHeaders[string(bytes.ToLower([]byte(k)))] = k
	}
}

func internHeader(name []byte) string {
	if k, ok := commonHeaders[string(name)]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

// trimOWS drops the optional whitespace (spaces and tabs) around a value.
// A loop of its own: bytes.Trim builds a set of its cutset on every call.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// validValue reports whether b holds no control character but HTAB.
func validValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validHost reports whether h can be a Host header: a host and optional
// port, with nothing that could change how it is read.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c <= ' ' || c == 0x7f, c == '/', c == '\\', c == '@', c == '?', c == '#':
			return false
		}
	}
	return true
}

// wantsClose reports whether the client asks for the connection to close
// after this request: Connection: close, or HTTP/1.0 without keep-alive.
func wantsClose(r *http.Request) bool {
	if hasToken(r.Header["Connection"], "close") {
		return true
	}
	return r.ProtoMinor == 0 && !hasToken(r.Header["Connection"], "keep-alive")
}

// hasToken reports whether any of the comma-separated values is tok,
// compared without case.
func hasToken(values []string, tok string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if equalFoldTrim(t, tok) {
				return true
			}
		}
	}
	return false
}

// equalFoldTrim reports whether s, without surrounding spaces and tabs, is
// tok compared without case.
func equalFoldTrim(s, tok string) bool { return strings.EqualFold(strings.Trim(s, " \t"), tok) }

// setBody decides how r's body is framed (RFC 9112 6.3) and sets Body,
// ContentLength, TransferEncoding and Trailer. Anything ambiguous is
// refused, except Content-Length beside chunked, where chunked wins, the
// length is dropped and the connection closes after the answer.
func setBody(r *http.Request, br *bufio.Reader) error {
	te := r.Header["Transfer-Encoding"]
	cl := r.Header["Content-Length"]
	switch {
	case len(te) > 0:
		if r.ProtoMinor == 0 {
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		}
		if len(te) > 1 || !equalFoldTrim(te[0], "chunked") {
			return &requestError{http.StatusNotImplemented, "unsupported Transfer-Encoding"}
		}
		for _, v := range cl {
			if _, err := parseLength(v); err != nil {
				return err
			}
		}
		if len(cl) > 0 {
			delete(r.Header, "Content-Length")
			r.Close = true
		}
		delete(r.Header, "Transfer-Encoding")
		r.TransferEncoding = chunkedOnly
		r.ContentLength = -1
		if keys := declaredTrailers(r.Header["Trailer"]); len(keys) > 0 {
			r.Trailer = make(http.Header, len(keys))
			for _, k := range keys {
				r.Trailer[k] = nil // declared, as net/http does; filled at the body's end
			}
		}
		r.Body = &chunkedBody{br: br, trailer: r.Trailer}
	case len(cl) > 0:
		n, err := parseLength(cl[0])
		if err != nil {
			return err
		}
		for _, v := range cl[1:] {
			if v != cl[0] {
				return badRequest("conflicting Content-Length headers")
			}
		}
		r.ContentLength = n
		if n > 0 {
			r.Body = &lengthBody{br: br, left: n, request: true}
		} else {
			r.Body = http.NoBody
		}
	default:
		r.Body = http.NoBody
	}
	return nil
}

var chunkedOnly = []string{"chunked"}

func parseLength(s string) (int64, error) {
	if len(s) == 0 || len(s) > 18 {
		return 0, badRequest("malformed Content-Length")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, badRequest("malformed Content-Length")
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, badRequest("malformed Content-Length")
	}
	return n, nil
}
