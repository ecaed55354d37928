// Package route holds the routing table: an immutable snapshot of which slot
// each listener sends requests to and which instances of each slot may be
// picked, plus the lock-free pick itself.
//
// A Table is built once by Build and never changed afterwards, so any number
// of requests may read it concurrently without locks. Publishing a newer
// table is the data plane's job (an atomic pointer swap); Retire tells the
// requests that hold on to the old one that it has been replaced.
//
// Routes match a request's canonical path (CleanPath) on segment
// boundaries; CheckPrefix says which prefixes can match at all.
//
// Per-instance counters (in-flight and served requests) live in long-lived
// *Instance values that successive tables share, so publishing a table never
// resets them. This package starts no goroutines and does no I/O.
package route
