package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
)

// hopHeaders are removed in both directions: they describe one connection,
// not the message (RFC 9110 section 7.6.1). Expect is handled by vipswap's
// own server, which answers 100-continue when the body is first read.
var hopHeaders = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Http2-Settings":      true,
}

// skipOutbound lists request headers vipswap writes itself.
var skipOutbound = map[string]bool{
	"Via":               true,
	"Expect":            true,
	"Host":              true,
	"Content-Length":    true,
	"X-Forwarded-For":   true,
	"X-Forwarded-Host":  true,
	"X-Forwarded-Proto": true,
	ShadowHeader:        true, // a client's claim to be a copy
}

// connectionListed reports whether name is listed in a Connection header,
// which makes it hop-by-hop too.
func connectionListed(h http.Header, name string) bool {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), name) {
				return true
			}
		}
	}
	return false
}

// upgradeType returns the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	if !connectionListed(h, "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// forbiddenUpgrade reports whether an upgrade must not be forwarded: h2c
// (HTTP/2 over cleartext) would let a client speak HTTP/2 to the instance
// past vipswap's HTTP/1.1 parser.
func forbiddenUpgrade(up string) bool {
	for tok := range strings.SplitSeq(up, ",") {
		if strings.EqualFold(strings.TrimSpace(tok), "h2c") {
			return true
		}
	}
	return false
}

// writeRequest writes r to bw as an HTTP/1.1 request for an instance, with
// uri as its target (the canonical path that was routed, and the query),
// hop-by-hop headers and the pin header (canonical; "" for none) removed,
// X-Forwarded-* set, via appended to Via, and the body framed by
// Content-Length or chunked encoding. body is r's body (or nil).
func writeRequest(bw *bufio.Writer, r *http.Request, uri string, body io.Reader, via, pin string) error {
	if err := writeRequestBuffered(bw, r, uri, body, via, pin); err != nil {
		return err
	}
	return bw.Flush()
}

// writeRequestBuffered is writeRequest without the last flush: what is
// left in bw is for the caller to send.
func writeRequestBuffered(bw *bufio.Writer, r *http.Request, uri string, body io.Reader, via, pin string) error {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	hasConnection := len(r.Header["Connection"]) > 0
	for k, vv := range r.Header {
		if hopHeaders[k] || skipOutbound[k] || vipswaps(k, pin) || (hasConnection && connectionListed(r.Header, k)) {
			continue
		}
		for _, v := range vv {
			writeHeader(bw, k, v)
		}
	}
	if up := upgradeType(r.Header); up != "" && !forbiddenUpgrade(up) {
		writeHeader(bw, "Connection", "Upgrade")
		writeHeader(bw, "Upgrade", up)
	}
	if te := r.Header.Values("Te"); len(te) > 0 && strings.Contains(strings.Join(te, ","), "trailers") {
		writeHeader(bw, "Te", "trailers")
	}
	writeForwarded(bw, r)
	bw.WriteString("Via: ")
	for _, v := range r.Header["Via"] {
		bw.WriteString(v)
		bw.WriteString(", ")
	}
	bw.WriteString(via)
	bw.WriteString("\r\n")

	switch {
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n\r\n")
		if err := copyBody(bw, body, r.ContentLength); err != nil {
			return err
		}
	case r.ContentLength < 0 && body != nil:
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		cw := httputil.NewChunkedWriter(bw)
		if _, err := io.Copy(cw, body); err != nil {
			return err
		}
		cw.Close() // the last chunk; trailers follow
		for k, vv := range r.Trailer {
			if hopHeaders[k] || skipOutbound[k] || vipswaps(k, pin) {
				continue
			}
			for _, v := range vv {
				writeHeader(bw, k, v)
			}
		}
		bw.WriteString("\r\n")
	default:
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			bw.WriteString("Content-Length: 0\r\n")
		}
		bw.WriteString("\r\n")
	}
	return nil
}

// copyPieceSize is the size of the pieces a large request body is copied
// in: bw's buffer alone would read and write it 4 KiB at a time.
const copyPieceSize = 32 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyPieceSize); return &b }}

// copyBody copies n bytes of body to bw: through bw when they fit in what
// it has left (with the head, in one write), otherwise in pieces of
// copyPieceSize, read straight from the client's socket when nothing of
// the body is buffered and written past bw's buffer once the head is out.
func copyBody(bw *bufio.Writer, body io.Reader, n int64) error {
	if n <= int64(bw.Available()) {
		_, err := io.CopyN(bw, body, n)
		return err
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for n > 0 {
		m, err := body.Read(buf[:min(int64(len(buf)), n)])
		if m > 0 {
			n -= int64(m)
			if _, werr := bw.Write(buf[:m]); werr != nil {
				return werr
			}
		}
		if err == io.EOF && n > 0 {
			return io.EOF // short, as io.CopyN says it
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// vipswaps reports whether the header field k is one only vipswap may
// send an instance: the pin header (canonical; "" for none) or the shadow's
// mark, in any spelling an application reads as them.
func vipswaps(k, pin string) bool { return isPin(k, pin) || isPin(k, ShadowHeader) }

// isPin reports whether the header field k is the pin header (canonical;
// "" for none), or reads as it where "_" and "-" are the same (CGI, WSGI
// and PHP read X_Vipswap_Slot as X-Vipswap-Slot).
func isPin(k, pin string) bool {
	if pin == "" {
		return false
	}
	return k == pin || strings.IndexByte(k, '_') >= 0 && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), pin)
}

func writeHeader(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// writeForwarded appends the client to X-Forwarded-For and sets
// X-Forwarded-Host and X-Forwarded-Proto.
func writeForwarded(bw *bufio.Writer, r *http.Request) {
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	bw.WriteString("X-Forwarded-For: ")
	for _, v := range r.Header["X-Forwarded-For"] {
		bw.WriteString(v)
		bw.WriteString(", ")
	}
	bw.WriteString(client)
	bw.WriteString("\r\n")
	writeHeader(bw, "X-Forwarded-Host", r.Host)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	writeHeader(bw, "X-Forwarded-Proto", proto)
}
