package h1

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/proxy/proxyproto"
)

// response is the http.ResponseWriter of one request. A connection reuses
// one for all its requests, header map included: handlers must not keep
// either after they return.
type response struct {
	c      *conn
	req    *http.Request
	header http.Header

	status      int
	wroteHeader bool // WriteHeader was called
	committed   bool // the final header was sent
	pending     []byte
	noBody      bool  // HEAD, 1xx, 204, 304: writes are dropped or refused
	chunked     bool  // the body is sent chunked
	length      int64 // the declared Content-Length, or -1
	written     int64
	closeAfter  bool // close the connection after this response
	hijacked    bool
	trailers    []string  // declared trailer fields, sent after a chunked body
	sentBefore  int64     // the writer's sent count when the response began
	length1     [1]string // the Content-Length finish sets, without a slice of its own

	// answers is where the handler may read an instance's answer
	// (Answers): kept across the connection's requests, used again by the
	// next one, after this response went out whole.
	answers *AnswerStore
}

// reset readies w for req on c, keeping its header map and pending buffer;
// reset(nil, nil) clears it for the pool.
func (w *response) reset(c *conn, req *http.Request) {
	h, pending, answers := w.header, w.pending[:0], w.answers
	if h == nil {
		h = make(http.Header, 8)
	} else {
		clear(h)
	}
	*w = response{c: c, req: req, header: h, pending: pending, length: -1, answers: answers}
	if req != nil {
		w.closeAfter = req.Close
	}
	if c != nil {
		w.sentBefore = c.bw.sent
	}
}

// SetBodyDeadline makes the rest of the request body due by t, however
// steadily it arrives: a read past t fails with a *BodyError (408). The
// handler calls it before reading the body, to read it whole under one
// deadline (the body a proxy buffers before it picks an instance).
func (w *response) SetBodyDeadline(t time.Time) {
	if w.c != nil && w.c.rd.body {
		w.c.rd.limit = clock.Nanos() + int64(time.Until(t))
	}
}

// Answers implements Answers: the store of the connection's answers,
// made at its first use.
func (w *response) Answers() *AnswerStore {
	if w.answers == nil {
		w.answers = new(AnswerStore)
	}
	return w.answers
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter. Informational statuses other
// than 101 are sent at once and may be followed by another. The final
// header is sent with the first body bytes that decide its framing.
func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	if code < 100 || code > 999 {
		code = http.StatusInternalServerError
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeHead(code, false)
		w.c.bw.Flush()
		w.sentBefore = w.c.bw.sent // an interim answer does not start the response
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header["Content-Length"]; len(cl) > 0 {
		if n, err := parseLength(cl[0]); err == nil {
			w.length = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		w.noBody = true
		w.length = -1
		delete(w.header, "Content-Length")
	} else if w.req.Method == http.MethodHead {
		w.noBody = true
	}
	if w.noBody || w.length >= 0 {
		w.commit()
	}
}

// commit sends the final header. A body of unknown length is chunked on
// HTTP/1.1 and ended by closing on HTTP/1.0.
func (w *response) commit() {
	w.committed = true
	if hasToken(w.header["Connection"], "close") || w.c.s.closing.Load() {
		w.closeAfter = true
	}
	if !w.noBody && w.length < 0 {
		if w.req.ProtoMinor >= 1 {
			w.chunked = true
			w.trailers = declaredTrailers(w.header["Trailer"])
		} else {
			w.closeAfter = true
		}
	}
	if !w.chunked {
		delete(w.header, "Trailer")
	}
	w.writeHead(w.status, true)
	if len(w.pending) > 0 {
		w.writeBody(w.pending)
		w.pending = w.pending[:0]
	}
}

// writeHead writes the status line and the header. final adds the framing
// and connection fields vipswap decides itself.
func (w *response) writeHead(code int, final bool) {
	bw := w.c.bw
	bw.WriteString(statusLine(code))
	for k, vv := range w.header {
		switch k {
		case "Connection", "Transfer-Encoding", "Keep-Alive":
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(sanitize(v))
			bw.WriteString("\r\n")
		}
	}
	if final {
		switch {
		case w.chunked:
			bw.WriteString("Transfer-Encoding: chunked\r\n")
		}
		switch {
		case w.closeAfter:
			bw.WriteString("Connection: close\r\n")
		case w.req.ProtoMinor == 0:
			bw.WriteString("Connection: keep-alive\r\n")
		}
	}
	bw.WriteString("\r\n")
}

// sanitize keeps a header value on its line: CR and LF become spaces, as
// net/http does, so a handler cannot split the response.
func sanitize(v string) string {
	if strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0 {
		return v
	}
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
}

func declaredTrailers(values []string) []string {
	var keys []string
	for _, v := range values {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				keys = append(keys, http.CanonicalHeaderKey(k))
			}
		}
	}
	return keys
}

// Write implements http.ResponseWriter. Until the header is sent, up to
// pendingMax bytes of a body of unknown length are held back, so a small
// body goes out with a Content-Length.
func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	if !w.committed {
		if len(w.pending)+len(p) <= pendingMax {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.commit()
	}
	return w.writeBody(p)
}

const pendingMax = 2 << 10

func (w *response) writeBody(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.written += int64(len(p))
	bw := w.c.bw
	if w.chunked {
		h := append(strconv.AppendInt(bw.chunkHead[:0], int64(len(p)), 16), '\r', '\n')
		if _, err := bw.writeParts(h, p, crlf); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return bw.Write(p)
}

// Flush implements http.Flusher.
func (w *response) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit()
	}
	w.c.bw.Flush()
}

// probeKeepAlive turns TCP keep-alive probes on for nc's socket: a tunnel
// has no idle timeout (a WebSocket may be quiet for hours), so a client
// that vanished without a word (its machine off, a network gone) is found
// by the probes. Listeners may accept connections without them: most
// connections close at their idle timeout, and the probes cost four
// system calls per connection.
func probeKeepAlive(nc net.Conn) {
	for {
		switch t := nc.(type) {
		case *net.TCPConn:
			t.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9})
			return
		case *tls.Conn:
			nc = t.NetConn()
		case *heldConn:
			nc = t.TCPConn
		case *proxyproto.Conn:
			nc = t.Conn
		default:
			return
		}
	}
}

// Hijack implements http.Hijacker: the handler takes the connection, with
// whatever the client sent beyond the request still in the reader.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.committed {
		return nil, nil, errors.New("h1: hijack after the response started")
	}
	c := w.c
	if err := c.bw.Flush(); err != nil {
		// Not taken over: the connection is still the server's, to close.
		return nil, nil, err
	}
	w.hijacked = true
	c.rd.body = false
	c.nc.SetDeadline(time.Time{})
	c.endRequest()
	c.s.forget(c)
	probeKeepAlive(c.nc)
	nc := &hijackedConn{Conn: c.nc, c: c}
	return nc, bufio.NewReadWriter(c.br, bufio.NewWriter(nc)), nil
}

// hijackedConn is a connection the handler took over; closing it gives
// back its slot under the server's MaxConns.
type hijackedConn struct {
	net.Conn
	c *conn
}

func (h *hijackedConn) Close() error {
	err := h.Conn.Close()
	h.c.releaseSlot()
	return err
}

// CloseWrite shuts down the sending side (a half-close), if the connection
// can.
func (h *hijackedConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return h.Conn.Close()
}

// Discard drops the response written so far, if none of it has reached the
// client yet, and reports whether it did: the handler may then write a
// whole new response (a 502 in place of an answer that broke off before
// its first byte was sent).
func (w *response) Discard() bool {
	if w.hijacked || w.c.bw.sent != w.sentBefore {
		return false
	}
	w.c.bw.buf = w.c.bw.buf[:0]
	w.reset(w.c, w.req)
	return true
}

// finish ends the response after the handler returned: the header if the
// handler wrote none, the last chunk and trailers, into the connection's
// buffer (the caller flushes it). A body shorter than its Content-Length
// closes the connection, since the client could not tell where the next
// response starts.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if !w.noBody && (len(w.header["Trailer"]) == 0 || w.req.ProtoMinor == 0) {
			// The whole body is known: send its length (trailers need chunks).
			w.length = int64(len(w.pending))
			w.length1[0] = strconv.Itoa(len(w.pending))
			w.header["Content-Length"] = w.length1[:]
		}
		w.commit()
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				bw.WriteString(k)
				bw.WriteString(": ")
				bw.WriteString(sanitize(v))
				bw.WriteString("\r\n")
			}
		}
		bw.WriteString("\r\n")
	}
	if !w.noBody && w.length >= 0 && w.written < w.length {
		w.closeAfter = true
	}
}

// statusLines holds "HTTP/1.1 NNN Reason\r\n" for every three-digit code.
var crlf = []byte("\r\n")

var statusLines = func() (s [900]string) {
	for code := 100; code < 1000; code++ {
		s[code-100] = "HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n"
	}
	return s
}()

func statusLine(code int) string { return statusLines[code-100] }
