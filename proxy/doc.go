// Package proxy is vipswap's built-in data plane: the prod and stage
// listeners, the request path, retries, holding and in-flight accounting.
//
// The request path reads the current *route.Table once, through an atomic
// pointer, and keeps it to the end (a request that holds for an instance
// reads the newer table it wakes for), so it never sees half of a swap. It
// takes no lock but the short one of an instance's connection pool, never
// talks to the store and never logs (but the sampled access log). The
// controller publishes new tables with Apply. The one exception is an ACME
// server's HTTP-01 validation (GET /.well-known/acme-challenge/): when a
// ChallengeHandler is set (SetChallenges) it may answer such a request,
// for a name with a validation pending, before anything routes it; the
// rest route as usual.
//
// Clients are served by package h1, vipswap's own HTTP/1.1 server, which
// parses and validates every request (conflicting lengths, unknown
// transfer codings, bare CRs, oversized heads are refused) before vipswap
// sees it. A listener may also speak HTTP/2 (ServeWith: "h2" by ALPN, h2c
// with prior knowledge), which h1 hands to golang.org/x/net/http2: each
// stream is a request through the same handler, so every promise here
// holds per stream (the table read once, holding, in-flight counts that a
// drain and Shutdown wait for), and it reaches the instance as HTTP/1.1
// (Host from :authority, a body of unknown length chunked, trailers both
// ways). Towards instances vipswap is its own lean HTTP/1.1 client: each
// attempt writes the request and reads the response on the handler's
// goroutine over a pooled keep-alive connection, so it knows exactly how
// far an attempt got, which decides whether it may be retried elsewhere
// (see failure in forward.go). Responses are read by h1.ReadResponse, which
// bounds the head and frames the body strictly. A slot may be reached
// over TLS (HTTPS/1.1, the same client over a tls.Conn) or over HTTP/2
// (h2c, h2: x/net's http2.ClientConn, whose RoundTrip vipswap calls
// itself so that no attempt is retried but by its rule), as
// Options.Upstreams says (tlsup.go, h2up.go).
//
// Before anything routes a request, its path is made canonical once
// (route.CleanPath: dot segments removed, // merged, escapes of unreserved
// characters decoded) or refused with a 400, on every listener; routes
// match that path, and it is what the request line to the instance
// carries, with the query as the client sent it (target.go). So no
// spelling of a path reaches an instance as another path than the one
// that was routed.
//
// What the proxy guarantees against broken peers:
//   - an answer never reaches another request: a pooled connection is reused
//     only if nothing is buffered after the last response and nothing
//     arrived while it sat idle;
//   - every wait has a deadline (Options: connect, write, response head,
//     body pieces both ways, slow clients), and a listener may bound its
//     connections;
//   - a client's broken request is its own 400 or 408, never a 502 counted
//     against the slot; an instance's broken answer is an immediate 502.
//
// Shutdown waits for every request in flight, upgraded connections
// (WebSockets) included, on any instance. At its limit, a WebSocket gets a
// close frame (1001) between two of the instance's frames, and a moment
// for the client's answer (wsclose.go). A connection accepted as it began
// is served, and one that has not sent its first request yet is given a
// moment to (h1's freshGrace).
//
// proxy imports route, the standard library and (through h1) x/net's
// http2; it must never import store, control, api, config or health (see
// deps_test.go).
package proxy
