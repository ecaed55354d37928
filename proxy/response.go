package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/internal/clock"
	"github.com/vipswap/vipswap/internal/sockerr"
)

// respond writes an instance's response to the client, streaming its body
// as it arrives, and returns the connection to the pool when it can be
// reused. A body cut off by the instance before anything reached the client
// becomes a 502; after, it aborts the client's response too (and counts as
// a failure). A client that goes away aborts the copy.
func (h *handler) respond(w http.ResponseWriter, r *http.Request, resp *http.Response, c exchange, rq *request, start time.Time) {
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
	if rq.setCookie != "" {
		if v := rq.table.AffinityValue(rq.setCookie); v != "" {
			out["Set-Cookie"] = append(out["Set-Cookie"], affinityCookie(rq.o.Affinity, v, r.TLS != nil))
		}
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		out["Trailer"] = []string{strings.Join(keys, ", ")}
	} else if isGRPC(resp.Header) && resp.ProtoMajor == 2 {
		// gRPC's status comes in trailers an HTTP/2 instance need not
		// announce; HTTP/1.1 sends only those announced.
		out["Trailer"] = []string{"Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin"}
		delete(out, "Content-Length") // trailers need a body of unknown length
	}
	w.WriteHeader(resp.StatusCode)

	// Send what has arrived whenever the instance has nothing more ready,
	// so a slow or streamed body (server-sent events) reaches the client as
	// it comes, while a body that arrives at once goes out in one write.
	flusher, _ := w.(http.Flusher)
	pool := &buffers
	if resp.ContentLength >= 0 && resp.ContentLength <= smallBufferSize {
		pool = &smallBuffers // a body known to be small: 4 KiB, not 32, while the client takes it
	}
	bufp := pool.Get().(*[]byte)
	defer pool.Put(bufp)
	buf := *bufp
	var writeWait time.Duration // time spent waiting on the client to take the answer
	t := clock.Now()            // when the read below began: one clock read ends a wait and begins the next
	for {
		// The time a read waits is the instance's: what the client
		// takes to read the answer is spent in the write below.
		n, rerr := resp.Body.Read(buf)
		read := clock.Now()
		rq.bodyWait += read.Sub(t)
		t = read
		if n > 0 {
			_, werr := w.Write(buf[:n])
			if werr != nil {
				c.stopWatch()
				c.Close()
				panic(http.ErrAbortHandler) // the client went away
			}
			if rerr == nil && flusher != nil && !c.pending() {
				flusher.Flush()
			}
			t = clock.Now()
			writeWait += t.Sub(read) // the write's and the flush's
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
			rq.slowRead = waitingOnClient(writeWait, writeWait+rq.bodyWait)
			if d, ok := w.(interface{ Discard() bool }); ok && d.Discard() {
				// Nothing reached the client yet: answer 502 instead.
				rq.status = 0
				err := &attemptError{kind: failInvalid, err: fmt.Errorf("instance %s: response body: %w", c.RemoteAddr(), rerr)}
				if sockerr.Timeout(rerr) {
					err.kind = failTimeout
				}
				h.fail(w, r, rq, err, start)
				return
			}
			panic(http.ErrAbortHandler) // cut off by the instance: cut the client off too
		}
	}
	// Trailers: those announced in the head by their names, the others
	// (an HTTP/2 instance need not announce them: gRPC's grpc-status) with
	// http.TrailerPrefix.
	announced := out["Trailer"]
	if isGRPC(resp.Header) {
		rq.grpc = grpcStatus(resp)
	}
	var names []string
	if len(announced) > 0 && len(resp.Trailer) > 0 {
		names = strings.Split(announced[0], ", ")
	}
	for k, vv := range resp.Trailer {
		if hopHeaders[k] {
			continue
		}
		if slices.Contains(names, k) {
			out[k] = vv
		} else {
			out[http.TrailerPrefix+k] = vv
		}
	}
	if rq.proxied { // its PROXY header named this request's client
		c.stopWatch()
		c.Close()
		return
	}
	c.release(r, resp, rq.o)
}

// reuseAfter reports whether an instance connection may carry another
// request after the exchange of r and resp. Not when the instance asked to
// close it or answered in HTTP/1.0; not after a 204 or 304, whose body a
// broken instance may send anyway in a later write; not after a request
// with a body, which the instance may not have read whole: what it left
// would be read as a request of its own and answered later, on this
// connection, to whoever used it next (a smuggled answer); and not at all
// when keep-alive to instances is off.
func reuseAfter(r *http.Request, resp *http.Response, o *Options) bool {
	switch {
	case o.DisableInstanceKeepAlive, resp.Close, resp.ProtoMinor == 0:
		return false
	case resp.StatusCode == http.StatusNoContent, resp.StatusCode == http.StatusNotModified:
		return false
	case r.ContentLength != 0:
		return false
	}
	return true
}

// probeInstance turns TCP keep-alive probes on for a tunnel's instance
// connection, which has no timeout: an instance whose host vanished
// without a word is found by them, within about three minutes (30 s of
// silence, then 9 probes 15 s apart, as the dialer's 30 s set before).
func probeInstance(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 15 * time.Second, Count: 9})
	}
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
	probeInstance(c.Conn)
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer client.Close()
	if err := resp.Write(brw); err != nil || brw.Flush() != nil {
		return
	}
	fromClient, fromInstance := make(chan error, 1), make(chan error, 1)
	go func() { fromClient <- pipe(c.Conn, brw.Reader) }()
	if strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		go func() { fromInstance <- relayFrames(client, c.br, c.Conn, p.away) }()
	} else {
		go func() { fromInstance <- pipe(client, c.br) }()
	}
	select {
	case err := <-fromClient:
		if err == nil {
			// The client finished sending (a half-close, passed on): the
			// instance may still answer, for a while.
			deadline := time.Now().Add(tunnelFinTimeout)
			client.SetDeadline(deadline)
			c.Conn.SetDeadline(deadline)
			<-fromInstance
			break
		}
		client.Close() // broken: end the other direction too
		c.Close()
		<-fromInstance
	case err := <-fromInstance:
		if errors.Is(err, errGoingAway) {
			// The client was sent a close frame at the shutdown limit:
			// its answer passes on to the instance, for a moment.
			deadline := time.Now().Add(wsCloseGrace)
			client.SetDeadline(deadline)
			c.Conn.SetDeadline(deadline)
			<-fromClient
			break
		}
		// The instance is done: so is the tunnel.
		client.Close()
		c.Close()
		<-fromClient
	}
	client.Close()
	c.Close()
}

// tunnelFinTimeout bounds how long a tunnel stays open after one side has
// finished sending (HAProxy's timeout client-fin and server-fin).
const tunnelFinTimeout = 30 * time.Second

// pipe copies src to dst until src ends, then half-closes dst so its
// reader sees the end too. It returns nil for a clean end.
func pipe(dst net.Conn, src io.Reader) error {
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return dst.Close()
}
