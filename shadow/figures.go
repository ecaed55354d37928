package shadow

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vipswap/vipswap/wire"
)

// dropReason says why a copy was not sent.
type dropReason int

const (
	dropQueueFull  dropReason = iota // the queue was full
	dropMemory                       // MaxMemory was reached
	dropTooLarge                     // its body was over BodyLimit, or streamed
	dropNoInstance                   // the target slot had no routable instance
	dropProdFailed                   // prod's answer did not reach the client whole
	dropStopped                      // the shadow ended before it went
	dropBusy                         // prod's goroutines waited for a CPU (watchCPU)
	numDrops
)

var dropNames = [numDrops]string{"queue_full", "memory", "too_large", "no_instance", "prod_failed", "stopped", "busy"}

// figures are one run's counts.
type figures struct {
	sampled, same, differ, errors, targetErrors, bodyUncompared atomic.Uint64
	dropped                                                     [numDrops]atomic.Uint64
	prodLat, targetLat                                          hist

	mu      sync.Mutex // guards samples, next, win
	samples []wire.ShadowDiff
	next    int // the ring's next slot once it is full
	max     int
	win     [winSeconds]second // the last seconds of copies sent, for the stop
}

// second is one second of copies sent to the target, and its failures.
type second struct {
	at          int64 // unix second
	sent, error int
}

const winSeconds = 10

func (f *figures) init(samples int) { f.max = samples }

// sample keeps a differing pair, replacing the oldest when full.
func (f *figures) sample(d wire.ShadowDiff) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.samples) < f.max {
		f.samples = append(f.samples, d)
		return
	}
	f.samples[f.next] = d
	f.next = (f.next + 1) % f.max
}

func diffOf(now time.Time, j *job, tgtStatus int, where, prod, target string) wire.ShadowDiff {
	line := j.method + " " + j.uri
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	return wire.ShadowDiff{Time: now.UTC(), Request: line, ProdStatus: j.prod.status, TargetStatus: tgtStatus,
		Where: where, Prod: prod, Target: target}
}

// window counts a copy sent in the last seconds and stops the run when the
// target fails so often that the copies are a load problem.
func (m *Mirror) window(ru *run, now time.Time, failed bool) {
	f := &ru.f
	sec := now.Unix()
	f.mu.Lock()
	w := &f.win[sec%winSeconds]
	if w.at != sec {
		*w = second{at: sec}
	}
	w.sent++
	if failed {
		w.error++
	}
	sent, errs := 0, 0
	for _, s := range f.win {
		if sec-s.at < winSeconds {
			sent, errs = sent+s.sent, errs+s.error
		}
	}
	f.mu.Unlock()
	if sent < m.o.StopMinRequests || float64(errs) < m.o.StopErrorRate*float64(sent) {
		return
	}
	why := fmt.Sprintf("slot %s failed %d of the last %d copies (%.0f%%, the limit is %.0f%%): stopped so as not to load it further",
		ru.spec.To, errs, sent, 100*float64(errs)/float64(sent), 100*m.o.StopErrorRate)
	if ru.stopped.CompareAndSwap(nil, &why) {
		select {
		case m.stops <- stop{ru.spec.Started, why}:
		default:
		}
	}
}

// figures returns the run's counts as the API shows them.
func (ru *run) figures() *wire.ShadowFigures {
	f := &ru.f
	out := &wire.ShadowFigures{
		Sampled: f.sampled.Load(), Same: f.same.Load(), Differ: f.differ.Load(), Error: f.errors.Load(),
		BodyUncompared: f.bodyUncompared.Load(), TargetErrors: f.targetErrors.Load(),
		Dropped: map[string]uint64{},
	}
	var total uint64
	for i, name := range dropNames {
		n := f.dropped[i].Load()
		out.Dropped[name] = n
		total += n
	}
	out.Dropped["total"] = total
	if c := out.Same + out.Differ; c > 0 {
		out.DifferRate = float64(out.Differ) / float64(c)
	}
	if s := out.Same + out.Differ + out.Error; s > 0 {
		out.ErrorRate = float64(out.TargetErrors) / float64(s)
	}
	out.ProdP50MS, out.ProdP99MS = f.prodLat.quantile(0.5), f.prodLat.quantile(0.99)
	out.TargetP50MS, out.TargetP99MS = f.targetLat.quantile(0.5), f.targetLat.quantile(0.99)
	if out.ProdP99MS > 0 && out.TargetP99MS > 0 {
		out.P99Ratio = out.TargetP99MS / out.ProdP99MS
	}
	if s := ru.stopped.Load(); s != nil {
		out.Stopped = *s
	}
	f.mu.Lock()
	out.Samples = make([]wire.ShadowDiff, 0, len(f.samples))
	out.Samples = append(append(out.Samples, f.samples[f.next:]...), f.samples[:f.next]...)
	f.mu.Unlock()
	sort.SliceStable(out.Samples, func(a, b int) bool { return out.Samples[a].Time.After(out.Samples[b].Time) })
	return out
}

// hist is a latency histogram with buckets 10% apart from 50µs to about a
// minute: a quantile within 10%, no lock, no allocation.
type hist struct {
	b [histBuckets]atomic.Uint64
}

const (
	histBuckets = 150
	histMin     = 50 * time.Microsecond
	histGrowth  = 1.1
)

var logGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	if d <= histMin {
		return 0
	}
	i := int(math.Log(float64(d)/float64(histMin))/logGrowth) + 1
	return min(i, histBuckets-1)
}

// upper returns bucket i's upper bound.
func upper(i int) time.Duration {
	return time.Duration(float64(histMin) * math.Pow(histGrowth, float64(i)))
}

func (h *hist) add(d time.Duration) { h.b[bucketOf(d)].Add(1) }

// quantile returns the q quantile in milliseconds (0 when empty), the
// upper bound of its bucket.
func (h *hist) quantile(q float64) float64 {
	var counts [histBuckets]uint64
	var total uint64
	for i := range h.b {
		counts[i] = h.b[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return float64(upper(i)) / float64(time.Millisecond)
		}
	}
	return float64(upper(histBuckets-1)) / float64(time.Millisecond)
}

// totals are the mirror's counts since it began, whatever the runs, for
// /metrics: they never go down.
type totals struct {
	same, differ, errors, dropped atomic.Uint64
	mu                            sync.Mutex
	lat                           map[string]*hist // by slot: prod's slots and the targets
}

func (t *totals) latency(slot string) *hist {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lat == nil {
		t.lat = map[string]*hist{}
	}
	h := t.lat[slot]
	if h == nil {
		h = new(hist)
		t.lat[slot] = h
	}
	return h
}

// Totals are a Mirror's counts since it began, for /metrics.
type Totals struct {
	// Requests counts the copies by result: same, differ, dropped, error.
	Requests map[string]uint64
	// Latency holds, by slot, the instances' latency of the compared pairs:
	// counts per bucket whose upper bounds are LatencyBounds (cumulative
	// as Prometheus wants them), and the sum in seconds.
	Latency map[string]Histogram
}

// Histogram is a cumulative latency histogram.
type Histogram struct {
	// Counts are the observations at most each bound of LatencyBounds,
	// then the count of all.
	Counts []uint64
	// Sum is an estimate of the observations' sum in seconds (each at its
	// bucket's upper bound).
	Sum float64
}

// LatencyBounds are the upper bounds of Histogram's buckets, in seconds.
var LatencyBounds = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Totals returns the counts since the mirror began.
func (m *Mirror) Totals() Totals {
	out := Totals{
		Requests: map[string]uint64{
			"same": m.totals.same.Load(), "differ": m.totals.differ.Load(),
			"dropped": m.totals.dropped.Load(), "error": m.totals.errors.Load(),
		},
		Latency: map[string]Histogram{},
	}
	m.totals.mu.Lock()
	hs := make(map[string]*hist, len(m.totals.lat))
	for k, v := range m.totals.lat {
		hs[k] = v
	}
	m.totals.mu.Unlock()
	for slot, h := range hs {
		hg := Histogram{Counts: make([]uint64, len(LatencyBounds)+1)}
		for i := range h.b {
			c := h.b[i].Load()
			if c == 0 {
				continue
			}
			up := upper(i).Seconds()
			hg.Sum += float64(c) * up
			for k, bound := range LatencyBounds {
				if up <= bound*histGrowth { // the bucket ends within 10% of the bound
					hg.Counts[k] += c
				}
			}
			hg.Counts[len(LatencyBounds)] += c
		}
		out.Latency[slot] = hg
	}
	return out
}
