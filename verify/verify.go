// Package verify is a load generator made for proving a switch: it sends
// GET requests to one URL from many clients at once, counts every failure
// by kind, and records which slot and version answered each second, so
// that a swap, a rollout or a rolling update under load can be shown to
// have failed nothing.
//
// Every attempt is counted, including one Go's HTTP client would replay
// unseen on another connection after the first was closed without an
// answer: that attempt is a failure (kind replayed), since a request that
// cannot be replayed (a POST) would have failed.
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Failure kinds.
const (
	KindStatus  = "status"  // answered with a 5xx
	KindConnect = "connect" // no connection (refused, unreachable)
	KindReset   = "reset"   // the connection closed or reset before a whole answer
	KindTimeout = "timeout" // no whole answer within the request timeout
	// KindReplayed is a request sent on a kept-alive connection that closed
	// before any answer, which the client then sent again on another: a
	// POST would have failed. A server that closes idle connections as a
	// request arrives causes these too (it never read that attempt).
	KindReplayed = "replayed"
	KindOther    = "other"
)

// Options says what load to send.
type Options struct {
	// URL is requested with GET.
	URL string
	// Concurrency is how many clients send requests, each one at a time.
	Concurrency int
	// Duration bounds the run; Requests, when above zero, bounds it too
	// (whichever comes first). Done, when set, ends it when closed.
	Duration time.Duration
	Requests int64
	Done     <-chan struct{}
	// Timeout bounds each request. Zero means 10s.
	Timeout time.Duration
	// Host, when set, is sent as the Host header.
	Host string
}

// Result is what a run saw.
type Result struct {
	// Requests counts attempts: every request the server could have
	// seen. OK counts those answered with a status below 500.
	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"`
	// Failures counts the failed attempts by kind; Failed is their sum.
	Failures map[string]int64 `json:"failures"`
	Failed   int64            `json:"failed"`
	// Statuses counts answers by HTTP status.
	Statuses map[int]int64 `json:"statuses"`
	// Latency percentiles of answered requests, in milliseconds.
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	// Seconds is the run's length; Seconds[i] what second i saw.
	Duration time.Duration `json:"duration_ns"`
	Seconds  []Second      `json:"per_second"`
	// Examples holds the first error of each kind, to say what it was.
	Examples map[string]string `json:"examples,omitempty"`
	// Cut counts requests the end of the run cut off (neither counted as
	// requests nor as failures).
	Cut int64 `json:"cut_off"`
}

// Second is one second of a run.
type Second struct {
	// Requests and Failed count the attempts that ended in it.
	Requests int64 `json:"requests"`
	Failed   int64 `json:"failed"`
	// Answered counts answers by who gave them: "slot version" from a JSON
	// body with "slot" and "version" fields, else "?".
	Answered map[string]int64 `json:"answered"`
}

// worker is one client's counts, merged at the end.
type worker struct {
	latencies []time.Duration
	statuses  map[int]int64
	failures  map[string]int64
	examples  map[string]string
	seconds   []Second
	ok        int64
	cut       int64
}

// Run sends the load until Duration passes, Requests were sent, Done is
// closed or ctx ends, and returns what it saw.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	req, err := http.NewRequest(http.MethodGet, o.URL, nil)
	if err != nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" {
		return Result{}, fmt.Errorf("--url %q: want http://host:port/path", o.URL)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConns: o.Concurrency, MaxIdleConnsPerHost: o.Concurrency,
		DialContext: (&net.Dialer{Timeout: o.Timeout}).DialContext, DisableCompression: true, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Duration > 0 {
		var c context.CancelFunc
		runCtx, c = context.WithTimeout(runCtx, o.Duration)
		defer c()
	}
	if o.Done != nil {
		go func() {
			select {
			case <-o.Done:
				cancel()
			case <-runCtx.Done():
			}
		}()
	}
	var sent atomic.Int64
	start := time.Now()
	workers := make([]*worker, o.Concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{statuses: map[int]int64{}, failures: map[string]int64{}, examples: map[string]string{}}
		workers[i] = w
		wg.Go(func() {
			for runCtx.Err() == nil {
				if o.Requests > 0 && sent.Add(1) > o.Requests {
					return
				}
				w.one(ctx, client, o, start) // the end of the run lets it finish
			}
		})
	}
	wg.Wait()
	return merge(workers, time.Since(start)), nil
}

// one sends one request and counts its attempts.
func (w *worker) one(ctx context.Context, client *http.Client, o Options, start time.Time) {
	var written atomic.Int32 // the transport calls back from its own goroutines
	trace := &httptrace.ClientTrace{WroteHeaders: func() { written.Add(1) }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, o.URL, nil)
	if o.Host != "" {
		req.Host = o.Host
	}
	began := time.Now()
	resp, err := client.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		resp.Body.Close()
	}
	attempts := int(written.Load())
	if attempts > 1 { // replayed by the transport: the earlier attempts failed
		w.fail(KindReplayed, "connection closed before an answer (the client sent the request again)", start, attempts-1)
	}
	if err != nil && ctx.Err() != nil {
		w.cut++ // the run ended under it: not the server's failure
		return
	}
	sec := w.second(start)
	if err != nil {
		kind := classify(err)
		w.failures[kind]++
		if _, ok := w.examples[kind]; !ok {
			w.examples[kind] = err.Error()
		}
		sec.Requests++
		sec.Failed++
		return
	}
	w.latencies = append(w.latencies, time.Since(began))
	w.statuses[resp.StatusCode]++
	sec.Requests++
	sec.Answered[label(body)]++
	if resp.StatusCode >= 500 {
		w.failures[KindStatus]++
		if _, ok := w.examples[KindStatus]; !ok {
			w.examples[KindStatus] = resp.Status + ": " + strings.TrimSpace(string(body[:min(len(body), 200)]))
		}
		sec.Failed++
		return
	}
	w.ok++
}

// fail counts n failed attempts of kind.
func (w *worker) fail(kind, example string, start time.Time, n int) {
	w.failures[kind] += int64(n)
	if _, ok := w.examples[kind]; !ok {
		w.examples[kind] = example
	}
	sec := w.second(start)
	sec.Requests += int64(n)
	sec.Failed += int64(n)
}

// second returns the counts of the second now falls in.
func (w *worker) second(start time.Time) *Second {
	i := int(time.Since(start) / time.Second)
	for len(w.seconds) <= i {
		w.seconds = append(w.seconds, Second{Answered: map[string]int64{}})
	}
	return &w.seconds[i]
}

// label names who answered: "slot version" from a JSON body that has
// them (the sample application's /api/test), else "?".
func label(body []byte) string {
	var v struct {
		Slot    string `json:"slot"`
		Version string `json:"version"`
	}
	if json.Unmarshal(body, &v) != nil || v.Slot == "" {
		return "?"
	}
	if v.Version == "" {
		return v.Slot
	}
	return v.Slot + " " + v.Version
}

// classify names the kind of a failed request.
func classify(err error) string {
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.As(err, &op) && op.Op == "dial":
		return KindConnect
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return KindConnect
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		strings.Contains(err.Error(), "server closed"), strings.Contains(err.Error(), "EOF"), errors.Is(err, os.ErrDeadlineExceeded):
		return KindReset
	}
	return KindOther
}

// merge adds the workers' counts up.
func merge(ws []*worker, took time.Duration) Result {
	r := Result{Failures: map[string]int64{}, Statuses: map[int]int64{}, Examples: map[string]string{}, Duration: took}
	var lat []time.Duration
	for _, w := range ws {
		r.OK += w.ok
		r.Cut += w.cut
		lat = append(lat, w.latencies...)
		for k, v := range w.statuses {
			r.Statuses[k] += v
		}
		for k, v := range w.failures {
			r.Failures[k] += v
			r.Failed += v
		}
		for k, v := range w.examples {
			if _, ok := r.Examples[k]; !ok {
				r.Examples[k] = v
			}
		}
		for i, s := range w.seconds {
			for len(r.Seconds) <= i {
				r.Seconds = append(r.Seconds, Second{Answered: map[string]int64{}})
			}
			r.Seconds[i].Requests += s.Requests
			r.Seconds[i].Failed += s.Failed
			for k, v := range s.Answered {
				r.Seconds[i].Answered[k] += v
			}
		}
	}
	for _, s := range r.Seconds {
		r.Requests += s.Requests
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	r.P50, r.P90, r.P99, r.Max = pct(0.50), pct(0.90), pct(0.99), pct(1)
	return r
}

// Report writes r for a person: totals, failures by kind, latency, and
// one line per second saying who answered.
func Report(w io.Writer, r Result) {
	fmt.Fprintf(w, "%d requests in %s (%.0f/s): %d ok, %d failed\n", r.Requests, r.Duration.Round(time.Millisecond),
		float64(r.Requests)/max(r.Duration.Seconds(), 1e-9), r.OK, r.Failed)
	kinds := []string{KindStatus, KindConnect, KindReset, KindTimeout, KindReplayed, KindOther}
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.Failures[k]))
	}
	fmt.Fprintf(w, "failures: %s\n", strings.Join(parts, ", "))
	for _, k := range kinds {
		if e, ok := r.Examples[k]; ok {
			fmt.Fprintf(w, "  first %s failure: %s\n", k, e)
		}
	}
	codes := make([]int, 0, len(r.Statuses))
	for c := range r.Statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts = parts[:0]
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d: %d", c, r.Statuses[c]))
	}
	fmt.Fprintf(w, "statuses: %s\n", strings.Join(parts, ", "))
	if r.Cut > 0 {
		fmt.Fprintf(w, "cut off by the end of the run (not counted): %d\n", r.Cut)
	}
	fmt.Fprintf(w, "latency: p50 %.1fms, p90 %.1fms, p99 %.1fms, max %.1fms\n", r.P50, r.P90, r.P99, r.Max)
	fmt.Fprintln(w, "who answered, per second:")
	for i, s := range r.Seconds {
		labels := make([]string, 0, len(s.Answered))
		for l := range s.Answered {
			labels = append(labels, l)
		}
		sort.Strings(labels)
		var line strings.Builder
		fmt.Fprintf(&line, "  %3ds %7d req %5d failed ", i, s.Requests, s.Failed)
		answered := int64(0)
		for _, l := range labels {
			answered += s.Answered[l]
		}
		for _, l := range labels {
			share := float64(s.Answered[l]) / float64(max(answered, 1))
			fmt.Fprintf(&line, " %s %s %3.0f%%", l, strings.Repeat("#", int(share*20+0.5))+strings.Repeat(".", 20-int(share*20+0.5)), share*100)
		}
		fmt.Fprintln(w, line.String())
	}
}
