package route

import "time"

// LatencyBounds are the upper bounds, in seconds, of the request latency
// histogram's buckets; a last bucket takes everything slower.
var LatencyBounds = [...]float64{
	.001, .00125, .0015, .002, .0025, .003, .004, .005, .006, .0075,
	.01, .0125, .015, .02, .025, .03, .04, .05, .06, .075,
	.1, .125, .15, .2, .25, .3, .4, .5, .6, .75,
	1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5, 10,
}

// ExportBounds are the coarser bounds /metrics shows: a subset of
// LatencyBounds, so each is the sum of the finer buckets below it. The
// finer ones let an analysis tell 115 ms from 250 ms.
var ExportBounds = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NoSlot names the slot of requests that found no slot to route to.
const NoSlot = "none"

// Counts is what a data plane counted of the requests one listener sent to
// one slot, since it started. Every data plane reports these, so the
// controller can measure a switch and judge a canary whichever it drives.
type Counts struct {
	// Classes counts answered requests by status class: Classes[2] is 2xx.
	// vipswap's own answers (502, 503, 504) are in Classes[5].
	Classes [6]uint64
	// Buckets counts requests by latency, one per LatencyBounds entry and a
	// last one for slower requests (not cumulative).
	Buckets [len(LatencyBounds) + 1]uint64
	// Sum is the total latency.
	Sum time.Duration
	// Retries counts attempts beyond the first.
	Retries uint64
	// Failed counts requests vipswap answered itself because no instance
	// could (502, 503, 504), or whose response the instance broke off; not
	// those the client was at fault for.
	Failed uint64
	// CutOff counts the responses the instance broke off (a subset of
	// Failed, counted in Classes by the status the instance had sent).
	CutOff uint64
}

// Requests returns the number of answered requests.
func (c Counts) Requests() uint64 {
	var n uint64
	for _, v := range c.Classes {
		n += v
	}
	return n
}

// Errors returns the requests a client saw fail: answered 5xx (by the
// instance or by vipswap) or broken off.
func (c Counts) Errors() uint64 { return c.Classes[5] + c.CutOff }

// Sub returns c minus an earlier snapshot o of the same counters. Counters
// that went back (a slot removed, then added again under its name, starts
// from zero) count from zero: c itself is returned.
func (c Counts) Sub(o Counts) Counts {
	for i := range c.Classes {
		if c.Classes[i] < o.Classes[i] {
			return c
		}
	}
	for i := range c.Classes {
		c.Classes[i] -= o.Classes[i]
	}
	for i := range c.Buckets {
		c.Buckets[i] -= o.Buckets[i]
	}
	c.Sum -= o.Sum
	c.Retries -= o.Retries
	c.Failed -= o.Failed
	c.CutOff -= o.CutOff
	return c
}

// Add returns c plus o.
func (c Counts) Add(o Counts) Counts {
	for i := range c.Classes {
		c.Classes[i] += o.Classes[i]
	}
	for i := range c.Buckets {
		c.Buckets[i] += o.Buckets[i]
	}
	c.Sum += o.Sum
	c.Retries += o.Retries
	c.Failed += o.Failed
	c.CutOff += o.CutOff
	return c
}

// Quantile returns the latency under which a fraction q of the requests
// fell, as the upper bound of the bucket that holds it (the last finite
// bound for the slowest bucket); zero with no requests.
func (c Counts) Quantile(q float64) time.Duration {
	var total uint64
	for _, n := range c.Buckets {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := max(q*float64(total), 1)
	var cum float64
	for i, n := range c.Buckets {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			if i >= len(LatencyBounds) {
				return time.Duration(LatencyBounds[len(LatencyBounds)-1] * float64(time.Second))
			}
			// Interpolate inside the bucket, as Prometheus's
			// histogram_quantile does.
			lo := 0.0
			if i > 0 {
				lo = LatencyBounds[i-1]
			}
			hi := LatencyBounds[i]
			at := lo + (hi-lo)*(rank-cum)/float64(n)
			return time.Duration(at * float64(time.Second))
		}
		cum += float64(n)
	}
	return time.Duration(LatencyBounds[len(LatencyBounds)-1] * float64(time.Second))
}

// SumCounts returns, per slot, the sum of what several data planes
// counted.
func SumCounts(sets ...map[string]Counts) map[string]Counts {
	out := make(map[string]Counts)
	for _, set := range sets {
		for slot, c := range set {
			out[slot] = out[slot].Add(c)
		}
	}
	return out
}
