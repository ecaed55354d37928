package route

import "time"

// LatencyBounds are the upper bounds, in seconds, of the latency
// histograms' buckets; a last bucket takes everything slower.
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

// GRPCCodes is how many gRPC status codes there are (OK 0 to
// UNAUTHENTICATED 16).
const GRPCCodes = 17

// GRPCServerFault reports whether a gRPC status an instance answered is
// the server's fault, counted as an error as a 5xx is: UNKNOWN (2),
// INTERNAL (13), UNAVAILABLE (14) and DATA_LOSS (15). DEADLINE_EXCEEDED (4)
// is not: the deadline is the client's (as a 408), and a slow instance
// shows in the latency; nor are the codes a client's request earns
// (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, ...).
func GRPCServerFault(code int) bool {
	switch code {
	case 2, 13, 14, 15:
		return true
	}
	return false
}

// NoSlot names the slot of requests that found no slot to route to.
const NoSlot = "none"

// RetiredSlots names the counts of slots removed a while ago, all
// together: a data plane's totals never go down when a slot goes.
const RetiredSlots = "retired"

// SourceGroups is how many groups the judged requests' client addresses
// are hashed into, so an analysis can weigh a flood from one source.
const SourceGroups = 32

// MaxWatchedPaths bounds the path prefixes whose judged requests are
// counted apart (Spec.Watch).
const MaxWatchedPaths = 8

// Histogram counts durations by LatencyBounds.
type Histogram struct {
	// Buckets counts durations, one per LatencyBounds entry and a last
	// one for slower ones (not cumulative).
	Buckets [len(LatencyBounds) + 1]uint64
	// Sum is the total of the durations.
	Sum time.Duration
}

// Count returns how many durations h holds.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, b := range h.Buckets {
		n += b
	}
	return n
}

func (h Histogram) sub(o Histogram) Histogram {
	for i := range h.Buckets {
		h.Buckets[i] -= o.Buckets[i]
	}
	h.Sum -= o.Sum
	return h
}

func (h Histogram) add(o Histogram) Histogram {
	for i := range h.Buckets {
		h.Buckets[i] += o.Buckets[i]
	}
	h.Sum += o.Sum
	return h
}

// Quantile returns the duration under which a fraction q of h's durations
// fell, interpolated inside its bucket as Prometheus's histogram_quantile
// does (the last finite bound for the slowest bucket); zero when h is
// empty.
func (h Histogram) Quantile(q float64) time.Duration {
	total := h.Count()
	if total == 0 {
		return 0
	}
	rank := max(q*float64(total), 1)
	var cum float64
	for i, n := range h.Buckets {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			if i >= len(LatencyBounds) {
				break
			}
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

// Tally counts requests and the errors among them (answered 5xx, by the
// instance or by vipswap, or broken off).
type Tally struct {
	Requests, Errors uint64
}

func (t Tally) sub(o Tally) Tally { return Tally{t.Requests - o.Requests, t.Errors - o.Errors} }
func (t Tally) add(o Tally) Tally { return Tally{t.Requests + o.Requests, t.Errors + o.Errors} }

// Judged is the part of a slot's requests the operator's plan sent there:
// drawn by prod's weights, or kept there by an affinity cookie vipswap
// issued. A rollout's analysis judges these alone; requests a client
// steered (a pin header, a version route) are counted in Counts.Steered.
type Judged struct {
	Tally
	// Latency is the instances' latency (Counts.Latency) of these
	// requests.
	Latency Histogram
	// Sources splits them by the client's network: its IPv4 /24 or IPv6
	// /56 (what one customer of a provider usually holds), hashed into
	// SourceGroups groups with a per-process seed. A data plane that
	// cannot tell clients apart leaves it zero.
	Sources [SourceGroups]Tally
	// Paths counts those whose path falls under each of the table's
	// watched prefixes (Spec.Watch), by the prefix's index, and by source
	// group as Sources.
	Paths [MaxWatchedPaths][SourceGroups]Tally
}

// PathTally returns the judged requests under watched prefix i, all
// sources together.
func (j Judged) PathTally(i int) Tally {
	var t Tally
	for _, s := range j.Paths[i] {
		t = t.add(s)
	}
	return t
}

func (j Judged) sub(o Judged) Judged {
	j.Tally = j.Tally.sub(o.Tally)
	j.Latency = j.Latency.sub(o.Latency)
	for i := range j.Sources {
		j.Sources[i] = j.Sources[i].sub(o.Sources[i])
	}
	for i := range j.Paths {
		for g := range j.Paths[i] {
			j.Paths[i][g] = j.Paths[i][g].sub(o.Paths[i][g])
		}
	}
	return j
}

func (j Judged) add(o Judged) Judged {
	j.Tally = j.Tally.add(o.Tally)
	j.Latency = j.Latency.add(o.Latency)
	for i := range j.Sources {
		j.Sources[i] = j.Sources[i].add(o.Sources[i])
	}
	for i := range j.Paths {
		for g := range j.Paths[i] {
			j.Paths[i][g] = j.Paths[i][g].add(o.Paths[i][g])
		}
	}
	return j
}

// Counts is what a data plane counted of the requests one listener sent to
// one slot, since it started. Every data plane reports these, so the
// controller can measure a switch and judge a canary whichever it drives.
type Counts struct {
	// Classes counts answered requests by status class: Classes[2] is 2xx.
	// vipswap's own answers (400, 502, 503, 504, ...) are counted too.
	Classes [6]uint64
	// Latency is the instances' latency: from the request fully sent to
	// an instance to its response head, never time spent waiting on the
	// client. A request vipswap answered itself counts the time it spent
	// trying instances. The rollout analysis judges this one.
	Latency Histogram
	// Response is the instances' time to the response's last byte: the
	// latency above plus the time spent waiting on the instance for the
	// body, not on the client to take it.
	Response Histogram
	// Total is what the client saw: from its request head read to the
	// answer's last byte written.
	Total Histogram
	// Retries counts attempts beyond the first.
	Retries uint64
	// Failed counts requests vipswap answered itself with a 5xx because no
	// instance could (502, 503, 504), or whose response the instance broke
	// off; not those the client was at fault for.
	Failed uint64
	// CutOff counts the responses the instance broke off (a subset of
	// Failed, counted in Classes by the status the instance had sent).
	CutOff uint64
	// InstanceErrors counts the 5xx answers the instances sent (and that
	// were not cut off), and their gRPC answers with a server-fault status
	// (GRPCServerFault): what clients received from the application.
	InstanceErrors uint64
	// GRPC counts the instances' gRPC answers by grpc-status (0 to 16; a
	// status beyond counts as UNKNOWN, 2).
	GRPC [GRPCCodes]uint64
	// ClientErrors counts the requests vipswap answered with a 4xx for the
	// client's own mistake (an unknown or repeated pin, a body that broke
	// off or came too slowly, a malformed request): counted in Classes[4],
	// never in Failed.
	ClientErrors uint64
	// Judged is the part of these requests that prod's weights (or an
	// affinity cookie vipswap issued) sent to the slot.
	Judged Judged
	// Steered counts the requests a pin header or a version route sent to
	// the slot.
	Steered Tally
}

// Requests returns the number of answered requests.
func (c Counts) Requests() uint64 {
	var n uint64
	for _, v := range c.Classes {
		n += v
	}
	return n
}

// Errors returns the requests a client saw fail through no fault of its
// own: the instances' 5xx answers, and the requests vipswap could not get
// answered (its own 5xx, answers broken off).
func (c Counts) Errors() uint64 { return c.InstanceErrors + c.Failed }

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
	c.Latency = c.Latency.sub(o.Latency)
	c.Response = c.Response.sub(o.Response)
	c.Total = c.Total.sub(o.Total)
	c.Retries -= o.Retries
	c.Failed -= o.Failed
	c.CutOff -= o.CutOff
	c.InstanceErrors -= o.InstanceErrors
	for i := range c.GRPC {
		c.GRPC[i] -= o.GRPC[i]
	}
	c.ClientErrors -= o.ClientErrors
	c.Judged = c.Judged.sub(o.Judged)
	c.Steered = c.Steered.sub(o.Steered)
	return c
}

// Add returns c plus o.
func (c Counts) Add(o Counts) Counts {
	for i := range c.Classes {
		c.Classes[i] += o.Classes[i]
	}
	c.Latency = c.Latency.add(o.Latency)
	c.Response = c.Response.add(o.Response)
	c.Total = c.Total.add(o.Total)
	c.Retries += o.Retries
	c.Failed += o.Failed
	c.CutOff += o.CutOff
	c.InstanceErrors += o.InstanceErrors
	for i := range c.GRPC {
		c.GRPC[i] += o.GRPC[i]
	}
	c.ClientErrors += o.ClientErrors
	c.Judged = c.Judged.add(o.Judged)
	c.Steered = c.Steered.add(o.Steered)
	return c
}

// Quantile returns the instances' latency under which a fraction q of
// the requests fell (Latency.Quantile).
func (c Counts) Quantile(q float64) time.Duration { return c.Latency.Quantile(q) }

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
