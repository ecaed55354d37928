// Package proxy is vipswap's built-in data plane: the prod and stage
// listeners, the request path, retries, holding and in-flight accounting.
//
// The request path reads the current *route.Table once, through an atomic
// pointer, and keeps it to the end (including retries), so a request never
// sees half of a swap. It takes no lock but the short one of an instance's
// connection pool, never talks to the store and never logs. The controller
// publishes new tables with Apply.
//
// Clients are served by net/http's server, which parses and validates every
// request (it rejects conflicting Content-Length and Transfer-Encoding,
// obs-fold and oversized headers) before vipswap sees it. Towards instances
// vipswap is its own lean HTTP/1.1 client: each attempt writes the request
// and reads the response on the handler's goroutine over a pooled keep-alive
// connection, so it knows exactly how far an attempt got, which decides
// whether it may be retried.
//
// proxy imports route and the standard library only; it must never import
// store, control, api, config or health (see deps_test.go).
package proxy
