package h1

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"syscall"
)

// BodyError is what reading a request body returns when the client did not
// send it whole: it cut it short, sent malformed chunks, or stalled longer
// than the server's BodyReadTimeout. It is the client's fault, never the
// handler's.
type BodyError struct {
	// Status is the answer that fits: 400 (malformed or cut short) or 408
	// (timed out).
	Status int
	// Err says what went wrong.
	Err error
}

func (e *BodyError) Error() string { return "request body: " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *BodyError) Unwrap() error { return e.Err }

// bodyError turns an error reading a request body into a *BodyError.
func bodyError(err error) error {
	var be *BodyError
	if errors.As(err, &be) {
		return err
	}
	if isTimeout(err) {
		return &BodyError{Status: http.StatusRequestTimeout, Err: errors.New("timed out waiting for the client to send it")}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &BodyError{Status: http.StatusBadRequest, Err: errors.New("the client sent less than it announced")}
	}
	return &BodyError{Status: http.StatusBadRequest, Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// lengthBody reads a body framed by Content-Length. A request's errors are
// *BodyError; a response's are io.ErrUnexpectedEOF or the connection's.
type lengthBody struct {
	br      *bufio.Reader
	left    int64
	request bool
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the peer sent less than it announced
	}
	if err == nil && b.left == 0 {
		err = io.EOF
	}
	if err != nil && err != io.EOF && b.request {
		err = bodyError(err)
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

func (b *lengthBody) done() bool { return b.left == 0 }

// chunkedBody reads a chunked body and the trailer section after it. Only
// trailer fields the message declared in its Trailer header are kept; those
// that would change framing or routing are dropped. A request's errors are
// *BodyError, a response's *ResponseError or the connection's.
type chunkedBody struct {
	br       *bufio.Reader
	cr       io.Reader
	trailer  http.Header // nil when none were declared
	response bool
	eof      bool
	err      error
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.cr == nil {
		b.cr = httputil.NewChunkedReader(b.br)
	}
	n, err := b.cr.Read(p)
	switch {
	case err == io.EOF:
		err = b.readTrailer()
		b.eof = err == io.EOF
	case err == nil:
	case isTimeout(err) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET):
		if !b.response {
			err = bodyError(err)
		}
	default:
		err = b.malformed("malformed chunked body: " + err.Error())
	}
	b.err = err
	return n, err
}

func (b *chunkedBody) malformed(msg string) error {
	if b.response {
		return &ResponseError{Msg: msg}
	}
	return &BodyError{Status: http.StatusBadRequest, Err: errors.New(msg)}
}

func (b *chunkedBody) readTrailer() error {
	// No trailer, as a rule: the section's empty line, already read in
	// (a line ending with a bare LF, or one still to come, goes the long
	// way). No map for nothing.
	if b.br.Buffered() >= 2 {
		if end, _ := b.br.Peek(2); end[0] == '\r' && end[1] == '\n' {
			b.br.Discard(2)
			return io.EOF
		}
	}
	h := requestHead(b.br, limits{bytes: 16 << 10, fields: 100})
	hdr, err := readHeader(&h, nil, nil)
	if err != nil {
		if isTimeout(err) && !b.response {
			return bodyError(err)
		}
		if isTimeout(err) {
			return err
		}
		return b.malformed("malformed trailer section")
	}
	for k, vv := range hdr {
		if _, declared := b.trailer[k]; declared && !forbiddenTrailer[k] {
			b.trailer[k] = vv
		}
	}
	return io.EOF
}

// forbiddenTrailer lists fields a trailer may not carry (RFC 9110 6.5.1).
var forbiddenTrailer = map[string]bool{
	"Content-Length": true, "Transfer-Encoding": true, "Trailer": true, "Host": true,
	"Connection": true, "Content-Type": true, "Authorization": true, "Cookie": true,
}

func (b *chunkedBody) Close() error { return nil }

func (b *chunkedBody) done() bool { return b.eof }

// continueBody answers "100 Continue" when the handler first reads a body
// the client is holding back for it (Expect: 100-continue).
type continueBody struct {
	io.ReadCloser
	c    *conn
	sent bool
}

func (b *continueBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		if !b.c.resp.committed {
			b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := b.c.bw.Flush(); err != nil {
				return 0, err
			}
			b.c.resp.sentBefore = b.c.bw.sent // an interim answer does not start the response
		}
	}
	return b.ReadCloser.Read(p)
}

// untilClose reads a response body that ends when the instance closes the
// connection (no Content-Length, no chunking).
type untilClose struct {
	br   *bufio.Reader
	done bool
}

func (b *untilClose) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.br.Read(p)
	b.done = err == io.EOF
	return n, err
}

func (b *untilClose) Close() error { return nil }

// bodyDone reports whether body has been read to its end.
func bodyDone(body io.ReadCloser) bool {
	switch b := body.(type) {
	case *lengthBody:
		return b.done()
	case *chunkedBody:
		return b.done()
	case *continueBody:
		return bodyDone(b.ReadCloser)
	case *untilClose:
		return b.done
	}
	return true // http.NoBody
}

// BodyDone reports whether a body read by this package (a request's, or a
// response's from ReadResponse) has been read to its end: its last Read
// returned io.EOF. Other bodies count as done.
func BodyDone(body io.ReadCloser) bool { return bodyDone(body) }
