// Package proxy is vipswap's built-in data plane: the prod and stage
// listeners, the request path, retries, holding and in-flight accounting.
//
// The request path reads the current *route.Table once, through an atomic
// pointer, and keeps it to the end (including retries), so a request never
// sees half of a swap. Nothing on the path takes a lock, talks to the store or
// logs. The controller publishes new tables with Apply.
//
// proxy imports route and the standard library only; it must never import
// store, control, api, config or health (see deps_test.go).
package proxy
