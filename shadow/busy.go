package shadow

import (
	"runtime/metrics"
	"time"
)

// schedLatency is the runtime's histogram of how long goroutines waited,
// runnable, for a CPU.
const schedLatency = "/sched/latencies:seconds"

// watchInterval is how often the mirror looks at the scheduler.
const watchInterval = 50 * time.Millisecond

// minWakeups is how many goroutine wake-ups an interval must hold for its
// waits to be judged: fewer say nothing about the CPU.
const minWakeups = 200

// watchCPU keeps m.busy up to date while a shadow runs: true while the
// process's goroutines wait for a CPU longer than Options.BusyWait (the
// 99th percentile over the last interval). Copies are then dropped as
// they come (busy): a copy costs the proxy about what the instance side
// of a prod request does, and on a CPU prod needs it would be paid in
// prod's latency.
func (m *Mirror) watchCPU() {
	sample := []metrics.Sample{{Name: schedLatency}}
	var prev []uint64
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
		if m.cur.Load() == nil {
			prev = nil
			m.busy.Store(false)
			continue
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindFloat64Histogram {
			return // not this runtime: never busy
		}
		h := sample[0].Value.Float64Histogram()
		if prev != nil {
			m.busy.Store(p99Above(h, prev, m.o.BusyWait.Seconds()))
		}
		prev = append(prev[:0], h.Counts...)
	}
}

// p99Above reports whether the 99th percentile of the waits counted in h
// since prev is above limit seconds; false when too few to judge.
func p99Above(h *metrics.Float64Histogram, prev []uint64, limit float64) bool {
	var total uint64
	for i, c := range h.Counts {
		total += c - prev[i]
	}
	if total < minWakeups {
		return false
	}
	// The waits above limit: those of the buckets that start at or above it.
	var above uint64
	for i, c := range h.Counts {
		if h.Buckets[i] >= limit {
			above += c - prev[i]
		}
	}
	return above*100 > total
}
