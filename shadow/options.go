package shadow

import "time"

// Options configure a Mirror. Zero values mean the documented defaults;
// docs/shadow.md sets them beside the configuration's shadow block.
type Options struct {
	// QueueSize bounds the copies waiting for a connection to the target;
	// one more is dropped (counted as queue_full). Zero means 1024.
	QueueSize int
	// MaxConns bounds the copies in flight to the target slot's
	// instances, all together, and so the connections they hold. Zero
	// means 32.
	MaxConns int
	// BodyLimit is the largest request body copied; a request with a
	// larger one (or one the proxy streamed rather than read whole, see
	// proxy.Options.RequestBuffer) is not copied (too_large). Zero means
	// 64 KiB.
	BodyLimit int
	// CompareLimit is the longest answer body compared, by hash; when both
	// are longer they are compared by status and type alone
	// (body_uncompared), when one is they differ by length; the target's
	// is not read further. Zero means 1 MiB.
	CompareLimit int64
	// KeepLimit is the longest answer body kept whole to compare as JSON
	// (with IgnoreFields) and to say where it differs first; a longer one
	// is compared by hash, fields and all. Zero means 64 KiB.
	KeepLimit int
	// MaxMemory bounds the bytes held for copies not yet compared (their
	// request heads and bodies, prod's answer head and kept body); a copy beyond it
	// is dropped (memory). Zero means 32 MiB.
	MaxMemory int64
	// Timeout bounds one exchange with the target, connect to last byte.
	// Zero means 5s.
	Timeout time.Duration
	// IgnoreFields are JSON fields left out of every comparison: a name
	// matches at any depth, "$.a.b" a path from the root (arrays are
	// passed through: "$.items.id" is every item's id).
	IgnoreFields []string
	// IgnoreHeaders are response headers left out of every comparison,
	// besides those that always differ (Date, Server, Content-Length...,
	// see alwaysIgnored).
	IgnoreHeaders []string
	// StopErrorRate is the target's error rate (its failures, and its 5xx
	// where prod answered otherwise, over the copies sent in the last 10s)
	// at which the mirror stops by itself: a slot that fails that much is
	// being hurt, not tested. Zero means 0.5; above 1 never.
	StopErrorRate float64
	// StopMinRequests is how many copies the last 10s must hold before
	// StopErrorRate is judged. Zero means 50.
	StopMinRequests int
	// BusyWait is how long the process's goroutines may wait for a CPU
	// (the 99th percentile over 50 ms) before copies are dropped (busy),
	// so that copies use only the CPU prod leaves. Zero means 1ms;
	// negative, never.
	BusyWait time.Duration
	// Samples bounds the differing pairs kept. Zero means 20.
	Samples int
	// AffinityCookie, if set, is removed from copies: prod's routing hint
	// means nothing to the target. (The pin header is removed by the
	// Sender, as from prod's requests.)
	AffinityCookie string
	// OnStop, if set, is called on the mirror's own goroutine when it
	// stopped copying by itself, with the start of the shadow it stopped
	// (which tells it from a later one) and why: the controller ends that
	// shadow then.
	OnStop func(started time.Time, reason string)
	// Sender sends the copies (required): the proxy whose prod requests
	// are copied, so that a copy reaches the target slot's instances as
	// prod's requests reach them (protocol, TLS, PROXY protocol,
	// timeouts), over the same pooled connections.
	Sender Sender
}

func (o *Options) setDefaults() {
	def(&o.QueueSize, 1024)
	def(&o.MaxConns, 32)
	def(&o.BodyLimit, 64<<10)
	def(&o.CompareLimit, 1<<20)
	def(&o.KeepLimit, 64<<10)
	def(&o.MaxMemory, 32<<20)
	def(&o.Timeout, 5*time.Second)
	def(&o.StopErrorRate, 0.5)
	def(&o.StopMinRequests, 50)
	def(&o.Samples, 20)
	if o.BusyWait == 0 {
		o.BusyWait = time.Millisecond
	}
}

func def[T int | int64 | float64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
