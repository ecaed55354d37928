package control

import (
	"github.com/vipswap/vipswap/measure"
	"github.com/vipswap/vipswap/wire"
)

// Rates returns the per-second request and error rates and latencies of
// each slot (both listeners together) over the last five minutes, oldest
// first, from the sampler's snapshots.
func (c *Controller) Rates() []wire.RateSample {
	return measure.Rates(c.samples.Ordered())
}
