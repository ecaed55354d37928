// Package metrics exposes what vipswap sees in the Prometheus format.
//
// Nothing here is on the request path: the data plane counts with atomics
// (proxy.Counters) and this package reads those counts when scraped.
package metrics

import (
	"runtime"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/route"
)

// Collector is a prometheus.Collector reading the data plane's counters and
// the controller's state at each scrape.
type Collector struct {
	proxy    *proxy.Proxy
	ctrl     *control.Controller
	restarts func() map[string]map[string]uint64
	version  string
	started  time.Time
}

// NewCollector returns a Collector for p and c. restarts, if set, returns
// the managed instances' restarts by slot and address; version names the
// build for vipswap_build_info.
func NewCollector(p *proxy.Proxy, c *control.Controller, restarts func() map[string]map[string]uint64, version string) *Collector {
	return &Collector{proxy: p, ctrl: c, restarts: restarts, version: version, started: time.Now()}
}

var (
	requestsDesc = prometheus.NewDesc("vipswap_requests_total",
		"Requests answered, by listener, slot and status class (2xx, 5xx, ...); slot \"none\" when no slot routed the listener.",
		[]string{"listener", "slot", "code"}, nil)
	durationDesc = prometheus.NewDesc("vipswap_request_duration_seconds",
		"What the client saw: time from reading a request's head to the end of its answer, time spent waiting on the client included.",
		[]string{"listener", "slot"}, nil)
	instanceLatencyDesc = prometheus.NewDesc("vipswap_instance_latency_seconds",
		"The instances' latency, which a rollout's analysis judges: from the request written whole to an instance to its response head (for vipswap's own answers, the time spent trying instances).",
		[]string{"listener", "slot"}, nil)
	instanceResponseDesc = prometheus.NewDesc("vipswap_instance_response_seconds",
		"The instances' time to their response's last byte: their latency plus the time spent waiting on them for the body, not on the client to take it.",
		[]string{"listener", "slot"}, nil)
	grpcDesc = prometheus.NewDesc("vipswap_grpc_responses_total",
		"The instances' gRPC answers by grpc-status (shown once a code was seen); UNKNOWN, INTERNAL, UNAVAILABLE and DATA_LOSS count as errors, as a 5xx does.",
		[]string{"listener", "slot", "code"}, nil)
	clientErrorsDesc = prometheus.NewDesc("vipswap_client_errors_total",
		"Requests vipswap answered with a 4xx for the client's own mistake (an unknown, empty or repeated pin, a body too large or too slow, a malformed request); never counted as failed.",
		[]string{"listener", "slot"}, nil)
	steeredDesc = prometheus.NewDesc("vipswap_steered_requests_total",
		"Requests on prod that a pin header or a version route sent to a slot, whatever the weights: a rollout's analysis does not judge them.",
		[]string{"listener", "slot"}, nil)
	failedDesc = prometheus.NewDesc("vipswap_failed_requests_total",
		"Requests vipswap answered itself with a 502 or 503, or whose response the instance broke off.",
		[]string{"listener", "slot"}, nil)
	retriesDesc = prometheus.NewDesc("vipswap_retries_total",
		"Attempts beyond a request's first, after a refused connection, a failed idempotent request or a draining instance's 503.",
		[]string{"listener", "slot"}, nil)
	connectionsDesc = prometheus.NewDesc("vipswap_client_connections",
		"Client connections a listener holds, idle and parked ones included.",
		[]string{"listener"}, nil)
	reclaimedDesc = prometheus.NewDesc("vipswap_client_connections_reclaimed_total",
		"Idle client connections closed to admit new ones at the listener's max_connections.",
		[]string{"listener"}, nil)
	refusedDesc = prometheus.NewDesc("vipswap_client_connections_refused_total",
		"Client connections closed at once because their client held max_connections_per_client.",
		[]string{"listener"}, nil)
	redirectsDesc = prometheus.NewDesc("vipswap_redirects_total",
		"Requests a listener with redirect_to answered itself (308 to https, or 400 for a bad Host), counted in no slot.",
		[]string{"listener"}, nil)
	floodedDesc = prometheus.NewDesc("vipswap_http2_connections_flooded_total",
		"HTTP/2 client connections closed for flooding the listener with frames that do no work, or a header block that does not end.",
		[]string{"listener"}, nil)
	certExpiryDesc = prometheus.NewDesc("vipswap_certificate_expiry_timestamp_seconds",
		"When a certificate a TLS listener (or the admin API, listener \"admin\") serves expires, in seconds since the Unix epoch; index 0 is the listener's default, name its first name.",
		[]string{"listener", "index", "name"}, nil)
	inFlightDesc = prometheus.NewDesc("vipswap_in_flight_requests",
		"Requests in flight on an instance.",
		[]string{"listener", "slot", "instance"}, nil)
	healthyDesc = prometheus.NewDesc("vipswap_instance_healthy",
		"1 if the instance passes its health checks.",
		[]string{"slot", "instance"}, nil)
	drainedDesc = prometheus.NewDesc("vipswap_instance_drained",
		"1 if an operator drained the instance.",
		[]string{"slot", "instance"}, nil)
	activeDesc = prometheus.NewDesc("vipswap_active_slot",
		"1 for the slot prod follows, 0 for the others.",
		[]string{"slot"}, nil)
	weightDesc = prometheus.NewDesc("vipswap_slot_weight",
		"The share of a listener's new requests a slot receives, from 0 to 1.",
		[]string{"listener", "slot"}, nil)
	changesDesc = prometheus.NewDesc("vipswap_changes_total",
		"State changes by operation (swap, rollback, drain, ready) and result: applied, refused (aborted by a check or if_revision) or failed (not recorded).",
		[]string{"operation", "result"}, nil)
	storeErrorsDesc = prometheus.NewDesc("vipswap_store_errors_total",
		"Store operations that failed.", nil, nil)
	storeUpDesc = prometheus.NewDesc("vipswap_store_up",
		"1 while this node reaches its state store, 0 while it serves the last state it had and refuses changes.", nil, nil)
	drivesDesc = prometheus.NewDesc("vipswap_drives_rollouts",
		"1 on the node that drives rollouts (with etcd, the holder of the lease).", nil, nil)
	notAppliedDesc = prometheus.NewDesc("vipswap_state_not_applied",
		"1 while the store holds a state this node refused (unreadable, or not fitting its configuration) and it serves the one it had.", nil, nil)
	revisionDesc = prometheus.NewDesc("vipswap_state_revision",
		"The revision of the routing state in force.", nil, nil)
	instanceRequestsDesc = prometheus.NewDesc("vipswap_instance_requests_total",
		"Requests an instance answered, by listener.",
		[]string{"listener", "slot", "instance"}, nil)
	instanceErrorsDesc = prometheus.NewDesc("vipswap_instance_errors_total",
		"Requests an instance answered with a 5xx, by listener.",
		[]string{"listener", "slot", "instance"}, nil)
	lastCheckDesc = prometheus.NewDesc("vipswap_instance_last_check",
		"1 for the code of the instance's last health check (L7OK, L7STS, L7RSP, L7TOUT, L4CON, L4TOUT, SOCKERR, PASSIVE); HTTP status in status, 0 if none.",
		[]string{"slot", "instance", "code", "status"}, nil)
	checksDesc = prometheus.NewDesc("vipswap_health_checks_total",
		"Health checks by outcome code; every code but L7OK is a probe failure, SOCKERR one vipswap could not make.",
		[]string{"code"}, nil)
	checkDurationDesc = prometheus.NewDesc("vipswap_health_check_duration_seconds",
		"Time health checks took (count and sum).", nil, nil)
	restartsDesc = prometheus.NewDesc("vipswap_instance_restarts_total",
		"Times a managed (run:) instance exited on its own and was started again.",
		[]string{"slot", "instance"}, nil)
	buildDesc = prometheus.NewDesc("vipswap_build_info",
		"Always 1; the labels name the build.", []string{"version", "goversion"}, nil)
	startDesc = prometheus.NewDesc("vipswap_start_time_seconds",
		"When vipswap started, in Unix seconds.", nil, nil)
	rolloutStepDesc = prometheus.NewDesc("vipswap_rollout_step",
		"The running rollout's current step, counted from 1 (0: no rollout runs), and the canary slot.",
		[]string{"to"}, nil)
	rolloutPausedDesc = prometheus.NewDesc("vipswap_rollout_paused",
		"1 while the running rollout waits for a promote.", nil, nil)
	rolloutVerdictDesc = prometheus.NewDesc("vipswap_rollout_verdict",
		"1 for the running rollout's latest analysis outcome: pass, wait (too few canary requests) or breach.",
		[]string{"verdict"}, nil)
	rolloutJudgementsDesc = prometheus.NewDesc("vipswap_rollout_analyses_total",
		"Analyses of running rollouts by outcome (pass, wait, breach); one every 250 ms while a rollout runs.",
		[]string{"verdict"}, nil)
	rolloutErrorRateDesc = prometheus.NewDesc("vipswap_rollout_error_rate",
		"Error rate over the analysis window of the canary and the stable slot.",
		[]string{"role", "slot"}, nil)
	rolloutP99Desc = prometheus.NewDesc("vipswap_rollout_p99_seconds",
		"p99 latency over the analysis window of the canary and the stable slot.",
		[]string{"role", "slot"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{requestsDesc, durationDesc, instanceLatencyDesc, instanceResponseDesc, clientErrorsDesc, grpcDesc, steeredDesc, failedDesc, retriesDesc, inFlightDesc,
		connectionsDesc, reclaimedDesc, refusedDesc, redirectsDesc, floodedDesc,
		healthyDesc, drainedDesc, activeDesc, weightDesc, changesDesc, storeErrorsDesc, storeUpDesc, notAppliedDesc, drivesDesc, revisionDesc,
		instanceRequestsDesc, instanceErrorsDesc, lastCheckDesc, checksDesc, checkDurationDesc, restartsDesc,
		buildDesc, startDesc, rolloutStepDesc, rolloutPausedDesc, rolloutVerdictDesc, rolloutJudgementsDesc,
		rolloutErrorRateDesc, rolloutP99Desc, certExpiryDesc} {
		ch <- d
	}
}

var classNames = [6]string{"", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Collect implements prometheus.Collector.
func (m *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range route.Listeners {
		ln := l.String()
		cs := m.proxy.ConnStats(l)
		ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(cs.Open), ln)
		ch <- prometheus.MustNewConstMetric(reclaimedDesc, prometheus.CounterValue, float64(cs.Reclaimed), ln)
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(cs.Refused), ln)
		ch <- prometheus.MustNewConstMetric(redirectsDesc, prometheus.CounterValue, float64(m.proxy.Redirected(l)), ln)
		ch <- prometheus.MustNewConstMetric(floodedDesc, prometheus.CounterValue, float64(cs.Flooded), ln)
		for slot, c := range m.proxy.Counters(l) {
			for class := 1; class <= 5; class++ {
				ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(c.Classes[class]), ln, slot, classNames[class])
			}
			for _, h := range []struct {
				desc *prometheus.Desc
				h    route.Histogram
			}{{durationDesc, c.Total}, {instanceLatencyDesc, c.Latency}, {instanceResponseDesc, c.Response}} {
				count, buckets := exportBuckets(h.h)
				ch <- prometheus.MustNewConstHistogram(h.desc, count, h.h.Sum.Seconds(), buckets, ln, slot)
			}
			ch <- prometheus.MustNewConstMetric(clientErrorsDesc, prometheus.CounterValue, float64(c.ClientErrors), ln, slot)
			for code, n := range c.GRPC {
				if n > 0 {
					ch <- prometheus.MustNewConstMetric(grpcDesc, prometheus.CounterValue, float64(n), ln, slot, strconv.Itoa(code))
				}
			}
			ch <- prometheus.MustNewConstMetric(steeredDesc, prometheus.CounterValue, float64(c.Steered.Requests), ln, slot)
			ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.CounterValue, float64(c.Failed), ln, slot)
			ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(c.Retries), ln, slot)
		}
	}

	st := m.ctrl.Status()
	for _, ls := range st.Listeners {
		for i, c := range ls.TLS {
			name := ""
			if len(c.Names) > 0 {
				name = c.Names[0]
			}
			ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(c.NotAfter.Unix()), ls.Name, strconv.Itoa(i), name)
		}
	}
	for i, c := range st.AdminTLS {
		name := ""
		if len(c.Names) > 0 {
			name = c.Names[0]
		}
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(c.NotAfter.Unix()), "admin", strconv.Itoa(i), name)
	}
	for _, s := range st.Slots {
		ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, boolValue(s.Name == st.Active), s.Name)
		for _, ls := range st.Listeners {
			ch <- prometheus.MustNewConstMetric(weightDesc, prometheus.GaugeValue, ls.Weights[s.Name]/100, ls.Name, s.Name)
		}
		for _, i := range s.Instances {
			ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, boolValue(i.Healthy), s.Name, i.Addr)
			ch <- prometheus.MustNewConstMetric(drainedDesc, prometheus.GaugeValue, boolValue(i.Drained), s.Name, i.Addr)
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(i.InFlight.Prod), "prod", s.Name, i.Addr)
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(i.InFlight.Stage), "stage", s.Name, i.Addr)
			ch <- prometheus.MustNewConstMetric(instanceRequestsDesc, prometheus.CounterValue, float64(i.Served.Prod), "prod", s.Name, i.Addr)
			ch <- prometheus.MustNewConstMetric(instanceRequestsDesc, prometheus.CounterValue, float64(i.Served.Stage), "stage", s.Name, i.Addr)
			ch <- prometheus.MustNewConstMetric(instanceErrorsDesc, prometheus.CounterValue, float64(i.Errors.Prod), "prod", s.Name, i.Addr)
			ch <- prometheus.MustNewConstMetric(instanceErrorsDesc, prometheus.CounterValue, float64(i.Errors.Stage), "stage", s.Name, i.Addr)
			if ck := i.Check; ck != nil {
				ch <- prometheus.MustNewConstMetric(lastCheckDesc, prometheus.GaugeValue, 1, s.Name, i.Addr, ck.Code, strconv.Itoa(ck.Status))
			}
		}
	}
	codes, took := m.ctrl.Checks()
	var checks uint64
	for code, n := range codes {
		checks += n
		ch <- prometheus.MustNewConstMetric(checksDesc, prometheus.CounterValue, float64(n), code)
	}
	ch <- prometheus.MustNewConstSummary(checkDurationDesc, checks, took.Seconds(), nil)
	if m.restarts != nil {
		for slot, byAddr := range m.restarts() {
			for addr, n := range byAddr {
				ch <- prometheus.MustNewConstMetric(restartsDesc, prometheus.CounterValue, float64(n), slot, addr)
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(buildDesc, prometheus.GaugeValue, 1, m.version, runtime.Version())
	ch <- prometheus.MustNewConstMetric(startDesc, prometheus.GaugeValue, float64(m.started.UnixNano())/1e9)
	changes := m.ctrl.Changes()
	keys := make([]control.ChangeKey, 0, len(changes))
	for k := range changes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a].Operation+keys[a].Result < keys[b].Operation+keys[b].Result })
	for _, k := range keys {
		ch <- prometheus.MustNewConstMetric(changesDesc, prometheus.CounterValue, float64(changes[k]), k.Operation, k.Result)
	}
	m.collectRollout(ch)
	ch <- prometheus.MustNewConstMetric(storeErrorsDesc, prometheus.CounterValue, float64(m.ctrl.StoreErrors()))
	ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, bit(st.Store.Reachable))
	ch <- prometheus.MustNewConstMetric(notAppliedDesc, prometheus.GaugeValue, bit(st.Store.NotApplied != nil))
	ch <- prometheus.MustNewConstMetric(drivesDesc, prometheus.GaugeValue, bit(st.DrivesRollouts))
	ch <- prometheus.MustNewConstMetric(revisionDesc, prometheus.GaugeValue, float64(st.Revision))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// collectRollout reports the running rollout and its analysis.
func (m *Collector) collectRollout(ch chan<- prometheus.Metric) {
	for verdict, n := range m.ctrl.Judgements() {
		ch <- prometheus.MustNewConstMetric(rolloutJudgementsDesc, prometheus.CounterValue, float64(n), verdict)
	}
	r := m.ctrl.RolloutStatus()
	if !r.Running {
		ch <- prometheus.MustNewConstMetric(rolloutStepDesc, prometheus.GaugeValue, 0, "")
		return
	}
	ch <- prometheus.MustNewConstMetric(rolloutStepDesc, prometheus.GaugeValue, float64(r.Step+1), r.To)
	ch <- prometheus.MustNewConstMetric(rolloutPausedDesc, prometheus.GaugeValue, boolValue(r.Paused))
	if v := m.ctrl.LastVerdict(); v != nil {
		for _, outcome := range []string{"pass", "wait", "breach"} {
			ch <- prometheus.MustNewConstMetric(rolloutVerdictDesc, prometheus.GaugeValue, boolValue(v.Outcome() == outcome), outcome)
		}
	}
	if a := r.Analysis; a != nil {
		ch <- prometheus.MustNewConstMetric(rolloutErrorRateDesc, prometheus.GaugeValue, a.Canary.ErrorRate, "canary", r.To)
		ch <- prometheus.MustNewConstMetric(rolloutErrorRateDesc, prometheus.GaugeValue, a.Stable.ErrorRate, "stable", r.From)
		ch <- prometheus.MustNewConstMetric(rolloutP99Desc, prometheus.GaugeValue, a.Canary.P99MS/1000, "canary", r.To)
		ch <- prometheus.MustNewConstMetric(rolloutP99Desc, prometheus.GaugeValue, a.Stable.P99MS/1000, "stable", r.From)
	}
}

// bit is 1 for true, 0 for false.
func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// exportBuckets returns h's count and its cumulative buckets at
// route.ExportBounds, as a Prometheus histogram has them.
func exportBuckets(h route.Histogram) (uint64, map[float64]uint64) {
	buckets := make(map[float64]uint64, len(route.ExportBounds))
	var cum uint64
	next := 0
	for i, bound := range route.LatencyBounds {
		cum += h.Buckets[i]
		if next < len(route.ExportBounds) && bound == route.ExportBounds[next] {
			buckets[bound] = cum
			next++
		}
	}
	return cum + h.Buckets[len(route.LatencyBounds)], buckets
}

var startToReadyDesc = prometheus.NewDesc("vipswap_start_to_ready_seconds",
	"Time from the process's start to serving: state loaded, data planes applied, listeners served (after a crash, what the restart cost). Absent until then.", nil, nil)

// StartToReady is a prometheus.Collector of vipswap_start_to_ready_seconds:
// what its function returns, once positive.
type StartToReady func() time.Duration

// Describe implements prometheus.Collector.
func (s StartToReady) Describe(ch chan<- *prometheus.Desc) { ch <- startToReadyDesc }

// Collect implements prometheus.Collector.
func (s StartToReady) Collect(ch chan<- prometheus.Metric) {
	if d := s(); d > 0 {
		ch <- prometheus.MustNewConstMetric(startToReadyDesc, prometheus.GaugeValue, d.Seconds())
	}
}
