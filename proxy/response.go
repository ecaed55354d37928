package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// respond writes an instance's response to the client, streaming its body
// as it arrives, and returns the connection to the pool when it can be
// reused. A body cut off by the instance before anything reached the client
// becomes a 502; after, it aborts the client's response too (and counts as
// a failure). A client that goes away aborts the copy.
func (h *handler) respond(w http.ResponseWriter, r *http.Request, resp *http.Response, c *upstreamConn, rq *request, start time.Time) {
	out := w.Header()
	hasConnection := len(resp.Header["Connection"]) > 0
	for k, vv := range resp.Header {
		if hopHeaders[k] || (hasConnection && connectionListed(resp.Header, k)) {
			continue
		}
		out[k] = vv
	}
	if _, ok := out["Content-Type"]; !ok {
		out["Content-Type"] = nil // pass the absence on: no sniffing
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		out["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)

	// Send what has arrived whenever the instance has nothing more ready,
	// so a slow or streamed body (server-sent events) reaches the client as
	// it comes, while a body that arrives at once goes out in one write.
	flusher, _ := w.(http.Flusher)
	bufp := buffers.Get().(*[]byte)
	defer buffers.Put(bufp)
	buf := *bufp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				c.stopWatch()
				c.Close()
				panic(http.ErrAbortHandler) // the client went away
			}
			if rerr == nil && flusher != nil && c.br.Buffered() == 0 {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			cancelled := !c.stopWatch()
			c.Close()
			if cancelled {
				panic(http.ErrAbortHandler) // the client went away
			}
			rq.cutOff = true
			if d, ok := w.(interface{ Discard() bool }); ok && d.Discard() {
				// Nothing reached the client yet: answer 502 instead.
				rq.status = 0
				err := &attemptError{kind: failInvalid, err: fmt.Errorf("instance %s: response body: %w", c.RemoteAddr(), rerr)}
				if isTimeout(rerr) {
					err.kind = failTimeout
				}
				h.fail(w, r, rq, err, start)
				return
			}
			panic(http.ErrAbortHandler) // cut off by the instance: cut the client off too
		}
	}
	for k, vv := range resp.Trailer {
		out[k] = vv
	}
	// Reuse the connection unless the instance asked to close it, the
	// client's cancellation already interrupted it, or the instance sent
	// more than the response (put checks that).
	if !c.stopWatch() || resp.Close {
		c.Close()
		return
	}
	c.pool.put(c)
}

// tunnel connects the client and the instance after a 101 Switching
// Protocols (WebSocket and other upgrades) and copies bytes both ways until
// either side closes.
//
// A tunnel has no idle timeout (WebSockets may be quiet for long); it
// counts as a request in flight until it closes.
func (p *Proxy) tunnel(w http.ResponseWriter, resp *http.Response, c *upstreamConn) {
	c.stopWatch()
	defer c.Close()
	c.readIdle, c.writeIdle = 0, 0
	c.Conn.SetDeadline(time.Time{})
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	if err := resp.Write(brw); err != nil || brw.Flush() != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(c.Conn, brw.Reader); done <- struct{}{} }()
	go func() { io.Copy(client, c.br); done <- struct{}{} }()
	<-done
	// One side ended: closing both ends the other copy.
	client.Close()
	c.Close()
	<-done
}
