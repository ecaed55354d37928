package proxy

import (
	"io"
	"net/http"
	"strings"
)

// respond writes an instance's response to the client, streaming its body,
// and returns the connection to the pool when it can be reused. A body cut
// off by the instance aborts the client's response too (and counts as a
// failure); a client that goes away aborts the copy.
func (h *handler) respond(w http.ResponseWriter, resp *http.Response, c *upstreamConn, rq *request) {
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

	// Stream bodies of unknown length (chunked, server-sent events) as they
	// come; let the server buffer the rest.
	flusher, _ := w.(http.Flusher)
	stream := resp.ContentLength < 0 && flusher != nil
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
			if stream {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			c.stopWatch()
			c.Close()
			rq.cutOff = true
			panic(http.ErrAbortHandler) // cut off by the instance: cut the client off too
		}
	}
	for k, vv := range resp.Trailer {
		out[k] = vv
	}
	// Reuse the connection unless the instance asked to close it or the
	// client's cancellation already interrupted it.
	if !c.stopWatch() || resp.Close {
		c.Close()
		return
	}
	c.pool.put(c)
}

// tunnel connects the client and the instance after a 101 Switching
// Protocols (WebSocket and other upgrades) and copies bytes both ways until
// either side closes.
func (p *Proxy) tunnel(w http.ResponseWriter, resp *http.Response, c *upstreamConn) {
	c.stopWatch()
	defer c.Close()
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
