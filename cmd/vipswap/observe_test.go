package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// scrape reads GET /metrics.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// metric returns the value of the series of family name whose labels
// include want, and whether there is one.
func metric(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsCountWhatWasSent sends a known number of requests (200s from
// the sample app and 404s) while scraping /metrics, then checks the
// counters against what was sent, and the state gauges across a swap.
func TestMetricsCountWhatWasSent(t *testing.T) {
	dir := t.TempDir()
	sw := switchtest.Serve(t, dir, testConfig(dir, managedSlots))
	sw.WaitHealthy(t)

	const clients, each = 8, 150 // every 5th request is a 404
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	done := make(chan struct{})
	for range clients {
		wg.Go(func() {
			hc := &http.Client{Timeout: 10 * time.Second}
			for i := range each {
				path := "/api/test"
				if i%5 == 0 {
					path = "/nowhere"
				}
				resp, err := hc.Get(sw.Prod + path)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	// Scrape under load: the counter only grows.
	scrapes, last := 0, 0.0
	for running := true; running; scrapes++ {
		select {
		case <-done:
			running = false
		default:
		}
		v, _ := metric(scrape(t, sw.Admin), "vipswap_requests_total", map[string]string{"listener": "prod", "slot": "blue", "code": "2xx"})
		if v < last {
			t.Fatalf("vipswap_requests_total went down: %v after %v", v, last)
		}
		last = v
	}
	if codes[200] != clients*each*4/5 || codes[404] != clients*each/5 {
		t.Fatalf("the load got %v, want %d 200s and %d 404s", codes, clients*each*4/5, clients*each/5)
	}

	m := scrape(t, sw.Admin)
	prodBlue := map[string]string{"listener": "prod", "slot": "blue"}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vipswap_requests_total", map[string]string{"listener": "prod", "slot": "blue", "code": "2xx"}, float64(codes[200])},
		{"vipswap_requests_total", map[string]string{"listener": "prod", "slot": "blue", "code": "4xx"}, float64(codes[404])},
		{"vipswap_requests_total", map[string]string{"listener": "prod", "slot": "blue", "code": "5xx"}, 0},
		{"vipswap_request_duration_seconds", prodBlue, float64(clients * each)},
		{"vipswap_failed_requests_total", prodBlue, 0},
		{"vipswap_active_slot", map[string]string{"slot": "blue"}, 1},
		{"vipswap_active_slot", map[string]string{"slot": "green"}, 0},
		{"vipswap_slot_weight", map[string]string{"listener": "stage", "slot": "green"}, 1},
		{"vipswap_client_connections_reclaimed_total", map[string]string{"listener": "prod"}, 0},
		{"vipswap_client_connections_refused_total", map[string]string{"listener": "prod"}, 0},
	}
	for _, c := range checks {
		if got, ok := metric(m, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, f := range []string{"vipswap_instance_healthy"} {
		if n := len(m[f].GetMetric()); n != 4 {
			t.Errorf("%s has %d series, want one per instance (4)", f, n)
		}
		for _, s := range m[f].GetMetric() {
			if s.GetGauge().GetValue() != 1 {
				t.Errorf("%s %v = %v, want 1", f, s.GetLabel(), s.GetGauge().GetValue())
			}
		}
	}
	t.Logf("%d scrapes under load; %v", scrapes, codes)

	// A swap and a refused one show in the change counters and gauges.
	ctx := context.Background()
	if _, err := sw.Client.Swap(ctx, wire.ChangeRequest{}); err != nil {
		t.Fatal(err)
	}
	stale := uint64(1)
	if _, err := sw.Client.Swap(ctx, wire.ChangeRequest{IfRevision: &stale}); err == nil {
		t.Fatal("a swap with a stale if_revision was applied")
	}
	m = scrape(t, sw.Admin)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vipswap_changes_total", map[string]string{"operation": "swap", "result": "applied"}, 1},
		{"vipswap_changes_total", map[string]string{"operation": "swap", "result": "refused"}, 1},
		{"vipswap_active_slot", map[string]string{"slot": "green"}, 1},
		{"vipswap_slot_weight", map[string]string{"listener": "prod", "slot": "green"}, 1},
		{"vipswap_store_errors_total", nil, 0},
	} {
		if got, ok := metric(m, c.name, c.labels); !ok || got != c.want {
			t.Errorf("after the swap: %s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}

	// The rates the dashboard draws saw the load (within a second or two:
	// one sample a second).
	vstest.WaitFor(t, 5*time.Second, func() error {
		rates, err := sw.Client.Rates(ctx)
		if err != nil {
			return err
		}
		total := 0.0
		for _, s := range rates.Samples {
			total += s.Slots["blue"].Requests
		}
		if total == 0 {
			return fmt.Errorf("no blue requests in %d rate samples", len(rates.Samples))
		}
		return nil
	})
}

// TestStatusWatch: `vipswap status --watch` redraws every second with the
// per-slot request rate, and stops cleanly on Ctrl-C.
func TestStatusWatch(t *testing.T) {
	dir := t.TempDir()
	sw := switchtest.Serve(t, dir, testConfig(dir, managedSlots))
	sw.WaitHealthy(t)
	load := vstest.StartLoad(sw.Prod+"/api/test", 4, 30*time.Second)
	defer load.Stop()

	watch := vstest.Start(t, vstest.Binary(t), "status", "--watch", "--admin", sw.Admin)
	watch.WaitLine(t, regexp.MustCompile(`(?m)^blue\s+[1-9]\d*\s+0\s`), 15*time.Second)
	watch.WaitLine(t, regexp.MustCompile(`(?m)^green\s+0\s+0\s`), 5*time.Second)
	watch.Signal(t, syscall.SIGINT)
	if code := watch.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("status --watch exited %d after Ctrl-C, want 0\n%s", code, watch.Output())
	}
	if res := load.Stop(); res.Failed != 0 {
		t.Fatalf("%d requests failed: %v", res.Failed, res.Errors)
	}
}
