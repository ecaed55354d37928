// Package h1 is the HTTP/1.1 server in front of vipswap's listeners, which
// also hands HTTP/2 connections to golang.org/x/net/http2.
//
// It replaces net/http's server on the request path for two reasons, both
// measured (docs/performance.md): net/http starts a background read for
// every request and keeps a goroutine and its buffers for every idle
// connection. Here a connection's goroutine reads the next request itself,
// and a connection idle for 100 ms is parked in an epoll set with no
// goroutine or buffers, so ten thousand idle keep-alive clients cost little.
//
// It speaks to net/http's Handler interface, with a ResponseWriter that
// implements Flusher and Hijacker. Framing is strict: requests with
// conflicting lengths, unknown transfer codings, bare CRs, malformed header
// lines or oversized heads are refused with a 4xx or 501 and the connection
// is closed. A request with both Content-Length and chunked is read as
// chunked and the connection closes after the answer (RFC 9112 6.1).
//
// Every wait has a deadline: a connection waits for its next request (its
// first too) at most IdleTimeout, each head must arrive whole within
// ReadHeaderTimeout of its first byte, each piece of a request body within
// BodyReadTimeout (the handler's read then fails with a *BodyError), and
// each write to the client may block at most WriteTimeout. A head's
// deadline is set once, when it starts: a client cannot extend it by
// sending a byte now and then. A connection silent since accept is idle,
// not slow: an HTTP client's pool may hold one it dialed and did not need
// (Go's counts it as reused, and sends a GET again unseen if it meets it
// closed), so it is kept as long as one between two requests.
//
// MaxConns bounds the connections a Server holds. At the limit a new
// connection takes the place of the one idle the longest (between
// requests, or silent since accept), as nginx reuses connections; only
// when none is idle does the server stop accepting. A connection in the
// middle of a request, its head included, is never closed for another.
// MaxConnsPerClient bounds the connections of one client (an IPv4
// address, an IPv6 /64): beyond it a new one is closed at once. So one
// client cannot hold the server with idle connections, nor with more
// slow heads than its cap.
//
// A connection accepted through a proxyproto.Listener may start with a
// PROXY protocol header from a trusted balancer: its goroutine reads it
// (before the TLS handshake) on the terms of a handshake, awaited as idle
// and then due within ReadHeaderTimeout of its first byte, and the client
// it names is the connection's RemoteAddr and what MaxConnsPerClient
// counts (such a connection is not counted against the balancer at
// accept). A broken header closes that connection alone.
//
// HTTP2 and H2C serve HTTP/2 on the same listener: a TLS connection that
// negotiated "h2" by ALPN, or on an H2C server a cleartext one that opens
// with the HTTP/2 client preface (prior knowledge; any other is
// HTTP/1.1), is handed to golang.org/x/net/http2 with the same Handler.
// It remains one of the server's connections: it holds its place under
// MaxConns and MaxConnsPerClient, is idle while it has no open stream (and
// may then be reclaimed at MaxConns, with a GOAWAY), and Shutdown sends it
// a GOAWAY and waits until its open streams have finished. Each stream
// keeps the promises above: its body's pieces are due within
// BodyReadTimeout (else a *BodyError), each write waits at most
// WriteTimeout (then the stream is reset), its response can be discarded
// until its first byte, and CONNECT, too many header fields, a :method
// that is no token and a :path with spaces or controls (which would forge
// the request line to an HTTP/1.1 instance) are refused as for HTTP/1.1. HTTP2Limits bound the rest (streams, windows, the ping
// of a silent connection). A connection that floods the server with frames
// that do no work (resets, SETTINGS, PING, PRIORITY, empty frames, beyond
// a budget per connection), or with a header block that never ends, is
// closed; its streams alone end.
//
// Shutdown stops accepting and closes idle keep-alive connections at once;
// a connection it accepted as it began is served, and one that has not
// sent its first request yet (its client dialed to send one, and would
// not retry it on a close) is given freshGrace for it, parked or not,
// then answered with Connection: close.
//
// The package also reads responses for vipswap's requests to instances
// (ReadResponse), with the same strict framing and bounded heads.
//
// Differences from net/http a handler can see: the request context is
// cancelled when the client hangs up during a request that has run for
// more than 200 ms (a quicker request's client is noticed when its
// response is written, as HAProxy does without abortonclose), and when the
// connection closes; the response header map is reused across a
// connection's requests; Date is not added; bodies without a Content-Length
// are sent chunked rather than buffered to measure them, except that up to
// 2 KiB are held back so a small body goes out with a length. The
// ResponseWriter can Discard what it has not sent yet.
package h1
