package h1

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httputil"
)

// lengthBody reads a body framed by Content-Length.
type lengthBody struct {
	br   *bufio.Reader
	left int64
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
		err = io.ErrUnexpectedEOF // the client sent less than it announced
	}
	if err == nil && b.left == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

func (b *lengthBody) done() bool { return b.left == 0 }

// chunkedBody reads a chunked body and the trailer section after it. Only
// trailer fields the request declared in its Trailer header are kept; those
// that would change framing or routing are dropped.
type chunkedBody struct {
	br      *bufio.Reader
	cr      io.Reader
	trailer http.Header // nil when none were declared
	eof     bool
	err     error
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.cr == nil {
		b.cr = httputil.NewChunkedReader(b.br)
	}
	n, err := b.cr.Read(p)
	if err == io.EOF {
		err = b.readTrailer()
		b.eof = err == io.EOF
	} else if err != nil {
		err = badRequest("malformed chunked body: " + err.Error())
	}
	b.err = err
	return n, err
}

func (b *chunkedBody) readTrailer() error {
	h := head{br: b.br, left: 16 << 10}
	hdr, err := readHeader(&h, 0)
	if err != nil {
		return badRequest("malformed trailer section")
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
		}
	}
	return b.ReadCloser.Read(p)
}

// bodyDone reports whether body has been read to its end.
func bodyDone(body io.ReadCloser) bool {
	switch b := body.(type) {
	case *lengthBody:
		return b.done()
	case *chunkedBody:
		return b.done()
	case *continueBody:
		return bodyDone(b.ReadCloser)
	}
	return true // http.NoBody
}
