package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ResponseError is an answer that is not a valid HTTP/1.1 response, or one
// beyond the limits: the instance that sent it is broken, and nothing of it
// may reach a client.
type ResponseError struct {
	// Msg says what is wrong.
	Msg string
}

func (e *ResponseError) Error() string { return "invalid response: " + e.Msg }

// ResponseLimits bound a response head.
type ResponseLimits struct {
	// MaxHeaderBytes bounds the head, status line included, across any
	// informational responses before it. Zero means 64 KiB.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the number of header fields. Zero means 100.
	MaxHeaderFields int
}

// ReadResponse reads the next response to a request with the given method
// from br: informational responses (1xx but 101) are skipped, then the final
// response's head is read and its body framed (RFC 9112 6.3). The body
// reads from br.
//
// Errors: when the connection ends or fails before any byte of a response,
// the connection's error (io.EOF, a reset, a timeout) is returned as is, so
// the caller can tell an instance that closed the connection from one that
// answered badly. A timeout is returned as is wherever it happens. Anything
// else wrong is a *ResponseError: a malformed or truncated head, a head
// beyond the limits, ambiguous framing.
//
// The returned response has Close set when the connection cannot carry
// another request after this response: the instance asked to close, the
// body runs until the connection closes, or the framing was suspicious
// (chunked beside Content-Length, a 204 or 304 with a body's framing, any
// answer to HEAD, whose body a broken instance may send anyway).
func ReadResponse(br *bufio.Reader, method string, l ResponseLimits) (*http.Response, error) {
	return ReadResponseInto(br, method, l, nil)
}

// ReadResponseInto is ReadResponse, reading the response into s, which
// holds it until s is used again (nil: a new response).
func ReadResponseInto(br *bufio.Reader, method string, l ResponseLimits, s *AnswerStore) (*http.Response, error) {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	if l.MaxHeaderFields <= 0 {
		l.MaxHeaderFields = 100
	}
	h := head{br: br, lim: limits{l.MaxHeaderBytes, l.MaxHeaderFields}, left: l.MaxHeaderBytes, response: true}
	first := true
	for {
		h.fields = l.MaxHeaderFields
		resp, err := readResponseHead(&h, method, first, s)
		if err != nil {
			return nil, err
		}
		first = false
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
}

// responseAndBody is a response with room for its body reader when its
// length is known, as most are, and for the slices of its header's
// values, as many as most heads have.
type responseAndBody struct {
	resp      http.Response
	body      lengthBody
	chunked   chunkedBody
	fields    headStore
	firstsBuf [16]string
}

// AnswerStore is where the instances' answers to one client connection's
// requests are read (ReadResponseInto), one after another: the response,
// its body reader when its length is known, its header map, the slices of
// its values and, when it is the same as the last answer's, the string of
// its values are reused, so an answer like the last one costs no
// allocation. An answer read into a store is valid until the store is
// used again: the store of a client connection (Answers) is used again by
// its next request, once the answer to this one has been sent whole.
type AnswerStore struct {
	both   responseAndBody
	header http.Header
}

// Answers is implemented by the http.ResponseWriter of a client
// connection that keeps an AnswerStore for its requests' answers.
type Answers interface {
	// Answers returns the connection's store.
	Answers() *AnswerStore
}

func readResponseHead(h *head, method string, first bool, s *AnswerStore) (*http.Response, error) {
	before := h.left
	line, err := h.line()
	if err != nil {
		return nil, headError(err, first && h.left == before)
	}
	minor, code, reason, ok := parseStatusLine(line)
	if !ok {
		return nil, &ResponseError{Msg: fmt.Sprintf("malformed status line %q", truncate(line, 40))}
	}
	var both *responseAndBody
	var hdr http.Header // nil: a new map
	if s == nil {
		both = new(responseAndBody) // one allocation for the answer and its usual body
	} else {
		both = &s.both
		both.body, both.chunked = lengthBody{}, chunkedBody{}
		if s.header == nil {
			s.header = make(http.Header, 8)
		}
		clear(s.header)
		hdr = s.header
	}
	if both.fields.firsts = both.fields.firsts[:0]; both.fields.firsts == nil {
		both.fields.firsts = both.firstsBuf[:0]
	}
	resp := &both.resp
	*resp = http.Response{
		Status:     statusText(code, reason),
		StatusCode: code,
		Proto:      internProto(minor),
		ProtoMajor: 1,
		ProtoMinor: minor,
	}
	if resp.Header, err = readHeader(h, hdr, &both.fields); err != nil {
		return nil, headError(err, false)
	}
	if err := frameResponse(resp, h.br, method, &both.body, &both.chunked); err != nil {
		return nil, err
	}
	return resp, nil
}

// headError returns err for a connection that ended or failed while a head
// was being read: as is when nothing had arrived, or for a timeout; as a
// *ResponseError otherwise.
func headError(err error, nothingRead bool) error {
	var re *ResponseError
	switch {
	case errors.As(err, &re), isTimeout(err), nothingRead:
		return err
	case errors.Is(err, io.EOF):
		return &ResponseError{Msg: "head cut short"}
	}
	return &ResponseError{Msg: "head cut short: " + err.Error()}
}

// parseStatusLine parses "HTTP/1.x SP 3DIGIT [SP reason]".
func parseStatusLine(line []byte) (minor, code int, reason []byte, ok bool) {
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return 0, 0, nil, false
	}
	switch line[7] {
	case '0', '1':
		minor = int(line[7] - '0')
	default:
		return 0, 0, nil, false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, nil, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, 0, nil, false
	}
	rest := line[12:]
	switch {
	case len(rest) == 0:
	case rest[0] == ' ':
		reason = rest[1:]
		if !validValue(reason) {
			return 0, 0, nil, false
		}
	default:
		return 0, 0, nil, false
	}
	return minor, code, reason, true
}

// statusText returns "200 OK", without allocating when the reason is the
// standard one.
func statusText(code int, reason []byte) string {
	if code < 1000 {
		if std := statusLine(code); string(reason) == std[13:len(std)-2] {
			return std[9 : len(std)-2]
		}
	}
	return strconv.Itoa(code) + " " + string(reason)
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// frameResponse decides where resp's body ends and sets Body,
// ContentLength, TransferEncoding, Trailer and Close.
//
// A body framed by Content-Length is lb, a chunked one cb, set up here.
func frameResponse(resp *http.Response, br *bufio.Reader, method string, lb *lengthBody, cb *chunkedBody) error {
	hdr := resp.Header
	te, cl := hdr["Transfer-Encoding"], hdr["Content-Length"]
	resp.Close = hasToken(hdr["Connection"], "close") ||
		(resp.ProtoMinor == 0 && !hasToken(hdr["Connection"], "keep-alive"))
	if len(te) > 0 {
		if resp.ProtoMinor == 0 {
			return &ResponseError{Msg: "Transfer-Encoding in an HTTP/1.0 response"}
		}
		if len(te) > 1 || !equalFoldTrim(te[0], "chunked") {
			return &ResponseError{Msg: fmt.Sprintf("unsupported Transfer-Encoding %q", strings.Join(te, ", "))}
		}
	}
	length := int64(-1)
	for i, v := range cl {
		n, err := parseLength(v)
		switch {
		case err != nil:
			return &ResponseError{Msg: fmt.Sprintf("malformed Content-Length %q", v)}
		case i > 0 && v != cl[0]:
			return &ResponseError{Msg: "conflicting Content-Length headers"}
		case len(te) == 0:
			length = n
		}
	}
	code := resp.StatusCode
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified || method == http.MethodHead {
		// No body, whatever the head says. Framing fields that say
		// otherwise show an instance that may send one anyway, and so does
		// HEAD (a common bug): such a connection is not reused.
		resp.Body = http.NoBody
		resp.ContentLength = 0
		switch {
		case method == http.MethodHead:
			resp.ContentLength = length
			resp.Close = true
		case len(te) > 0, code == http.StatusNoContent && length > 0:
			resp.Close = true
		}
		delete(hdr, "Transfer-Encoding")
		if code == http.StatusNoContent {
			delete(hdr, "Content-Length")
		}
		return nil
	}
	switch {
	case len(te) > 0:
		if len(cl) > 0 {
			// Chunked wins (RFC 9112 6.3), but the instance cannot be
			// trusted with another request on this connection.
			delete(hdr, "Content-Length")
			resp.Close = true
		}
		delete(hdr, "Transfer-Encoding")
		resp.TransferEncoding = chunkedOnly
		resp.ContentLength = -1
		if keys := declaredTrailers(hdr["Trailer"]); len(keys) > 0 {
			resp.Trailer = make(http.Header, len(keys))
			for _, k := range keys {
				resp.Trailer[k] = nil
			}
		}
		*cb = chunkedBody{br: br, trailer: resp.Trailer, response: true}
		resp.Body = cb
	case length == 0:
		resp.Body = http.NoBody
		resp.ContentLength = 0
	case length > 0:
		*lb = lengthBody{br: br, left: length}
		resp.Body = lb
		resp.ContentLength = length
	default:
		resp.Body = &untilClose{br: br}
		resp.ContentLength = -1
		resp.Close = true
	}
	return nil
}
