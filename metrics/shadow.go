package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vipswap/vipswap/shadow"
)

var (
	shadowRequestsDesc = prometheus.NewDesc("vipswap_shadow_requests_total",
		"Copies of prod requests made by vipswap shadow, by result: same (the target answered as prod did), differ, dropped (not sent: queue or memory full, body too large, no instance, prod failed, the shadow ended) and error (the target gave no valid answer).",
		[]string{"result"}, nil)
	shadowLatencyDesc = prometheus.NewDesc("vipswap_shadow_latency_seconds",
		"The instances' latency (request sent to response head) of the compared pairs of a shadow, by slot: prod's slot for the originals, the target for the copies. Buckets are estimates within 10%.",
		[]string{"slot"}, nil)
)

// ShadowCollector reads a shadow mirror's counts at each scrape.
type ShadowCollector struct{ m *shadow.Mirror }

// NewShadowCollector returns a collector for m.
func NewShadowCollector(m *shadow.Mirror) *ShadowCollector { return &ShadowCollector{m: m} }

// Describe implements prometheus.Collector.
func (c *ShadowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- shadowRequestsDesc
	ch <- shadowLatencyDesc
}

// Collect implements prometheus.Collector.
func (c *ShadowCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.m.Totals()
	for _, result := range []string{"same", "differ", "dropped", "error"} {
		ch <- prometheus.MustNewConstMetric(shadowRequestsDesc, prometheus.CounterValue, float64(t.Requests[result]), result)
	}
	for slot, h := range t.Latency {
		buckets := make(map[float64]uint64, len(shadow.LatencyBounds))
		for i, b := range shadow.LatencyBounds {
			buckets[b] = h.Counts[i]
		}
		ch <- prometheus.MustNewConstHistogram(shadowLatencyDesc, h.Counts[len(shadow.LatencyBounds)], h.Sum, buckets, slot)
	}
}
