//go:build !linux

package proxy

// alive cannot peek without blocking here; idempotent requests are retried
// when a reused connection turns out closed, others fail with a 502.
func (c *upstreamConn) alive() bool { return c.buffered() == 0 }
