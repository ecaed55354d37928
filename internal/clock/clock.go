// Package clock reads the time for the request path's durations and
// deadlines with one read of the system's monotonic clock. time.Now reads
// two clocks, the wall clock and the monotonic one; a request reads the
// time a few dozen times (when it began, was sent, was answered; each
// deadline moved), and in a virtual machine each read costs tens of
// nanoseconds.
//
// A time from Now has an exact monotonic reading and a wall reading of
// the wall clock at start plus the time elapsed since: it does not follow
// changes made to the system's clock after start. Sub, Since, Until,
// Before and After between two times that both carry a monotonic reading
// use it alone, so they are exact between times from Now and from
// time.Now. Keep time.Now for what is shown as a date (a log's timestamp).
//
// Nanos is Now as Unix nanoseconds, for times kept in an atomic integer;
// At turns one back into a time.Time that carries its monotonic reading,
// so that a deadline set with it costs one read (net.Conn's deadlines are
// measured with time.Until). Compare Nanos readings only with each other:
// time.Now().UnixNano() drifts from them as the wall clock is corrected.
package clock

import "time"

var (
	start     = time.Now()
	startUnix = start.UnixNano()
)

// Now returns the current time, read from the monotonic clock alone.
func Now() time.Time { return start.Add(time.Since(start)) }

// Nanos returns Now().UnixNano().
func Nanos() int64 { return startUnix + int64(time.Since(start)) }

// At returns the time of ns, a Nanos reading (or one offset from it),
// with its monotonic reading: At(Nanos()) is Now().
func At(ns int64) time.Time { return start.Add(time.Duration(ns - startUnix)) }

// Refresh moves a deadline, set with set, to now plus timeout once a
// quarter of timeout has passed since it was set, or when it is further
// away than timeout (the timeout got shorter), and returns the deadline in
// force (a Nanos reading): a timer update per read or write is a cost a
// busy connection need not pay.
func Refresh(set func(time.Time) error, deadline int64, timeout time.Duration) int64 {
	now := Nanos()
	if left := deadline - now; left >= int64(timeout)*3/4 && left <= int64(timeout) {
		return deadline
	}
	deadline = now + int64(timeout)
	set(At(deadline))
	return deadline
}
