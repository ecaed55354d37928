//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// result is one load run.
type result struct {
	rps      float64
	p50, p99 time.Duration
	// errors counts failed requests or calls, and non-2xx answers.
	errors  int
	peakRSS float64
	// cpuPerReq is the target's CPU time per request served in the run.
	cpuPerReq time.Duration
	// requests is how many requests (or calls) completed in the run; 0
	// when the load generator does not say (then rps times the duration).
	requests float64
	// work is the target's work per request in the run.
	work work
	// perConn is the target's resident memory under load beyond what it
	// held before the run, per client connection, in bytes.
	perConn float64
	// traced says perf counted the run's system calls (see work.traced).
	traced bool
}

var (
	rpsRE     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	countRE   = regexp.MustCompile(`(\d+) requests in`)
	latencyRE = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	non2xxRE  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	socketRE  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrk runs wrk -t1 against url and parses its summary. Socket errors
// count as errors only on keep-alive runs: with Connection: close, wrk
// counts the closes it asked for as read errors.
//
// script, if set, is a wrk Lua script (the uploads' POST).
func runWrk(url string, conns int, d time.Duration, headers []string, script string) (result, error) {
	args := []string{"-t1", "-c" + strconv.Itoa(conns), "-d" + d.String(), "--latency"}
	if script != "" {
		args = append(args, "-s", script)
	}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	s := string(out)
	m := rpsRE.FindStringSubmatch(s)
	if m == nil {
		return result{}, fmt.Errorf("no Requests/sec in wrk output:\n%s", s)
	}
	var r result
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if c := countRE.FindStringSubmatch(s); c != nil {
		r.requests, _ = strconv.ParseFloat(c[1], 64)
	}
	for _, l := range latencyRE.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}[l[3]]
		d := time.Duration(v * unit)
		if l[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if e := non2xxRE.FindStringSubmatch(s); e != nil {
		n, _ := strconv.Atoi(e[1])
		r.errors += n
		log.Printf("warning: %s: %s", url, e[0])
	}
	if e := socketRE.FindStringSubmatch(s); e != nil && !strings.Contains(strings.Join(headers, ""), "close") {
		for _, f := range e[1:] {
			n, _ := strconv.Atoi(f)
			r.errors += n
		}
		log.Printf("warning: %s: %s", url, e[0])
	}
	return r, nil
}

var (
	h2FinishedRE = regexp.MustCompile(`finished in ([0-9.]+)(m?s), ([0-9.]+) req/s`)
	h2RequestsRE = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2StatusRE   = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// runH2load runs h2load (one thread) with conns connections of streams
// concurrent streams each against url for d. Its summary has no
// percentiles, so they come from its per-request log.
func runH2load(url, dir string, conns, streams int, d time.Duration) (result, error) {
	logFile := filepath.Join(dir, "h2load.log")
	defer os.Remove(logFile)
	args := []string{"-t1", "-c" + strconv.Itoa(conns), "-m" + strconv.Itoa(streams), "-D", d.String(), "--npn-list=h2", "--log-file", logFile, url}
	out, err := exec.Command("h2load", args...).CombinedOutput()
	s := string(out)
	if err != nil || strings.Contains(s, "No protocol negotiated") {
		return result{}, fmt.Errorf("h2load: %v\n%s", err, s)
	}
	if !strings.Contains(s, "Application protocol: h2") {
		return result{}, fmt.Errorf("h2load did not negotiate h2:\n%s", s)
	}
	m, req, st := h2FinishedRE.FindStringSubmatch(s), h2RequestsRE.FindStringSubmatch(s), h2StatusRE.FindStringSubmatch(s)
	if m == nil || req == nil || st == nil {
		return result{}, fmt.Errorf("no summary in h2load output:\n%s", s)
	}
	var r result
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	// h2load's failed requests include those with a 4xx or 5xx answer;
	// it counts a 3xx as a success, which here it is not.
	succeeded, failed := n(req[4]), n(req[5])
	r.errors = failed + n(st[2])
	if r.errors > 0 {
		log.Printf("warning: %s: %s; %s", url, req[0], st[0])
	}
	if succeeded == 0 {
		return r, fmt.Errorf("h2load: no request succeeded:\n%s", s)
	}
	// Requests/s from the 2xx answers over the run, rather than h2load's
	// figure, which counts failed ones too.
	secs, _ := strconv.ParseFloat(m[1], 64)
	if m[2] == "ms" {
		secs /= 1000
	}
	r.rps = float64(n(st[1])) / secs
	r.requests = float64(n(st[1]))
	raw, err := os.ReadFile(logFile)
	if err != nil {
		return r, err
	}
	var lat []time.Duration
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Split(line, "\t")
		if len(f) >= 3 && strings.HasPrefix(f[1], "2") {
			us, _ := strconv.ParseInt(f[2], 10, 64)
			lat = append(lat, time.Duration(us)*time.Microsecond)
		}
	}
	r.p50, r.p99 = percentiles(lat)
	return r, nil
}

// loadReport is what a load subcommand (handshake, grpcload) prints as
// one JSON line.
type loadReport struct {
	OK         int           `json:"ok"`
	Errors     int           `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	Seconds    float64       `json:"seconds"`
	P50        time.Duration `json:"p50"`
	P99        time.Duration `json:"p99"`
}

// runLoad runs a load subcommand of this program in its own process, on
// one core like wrk -t1 and h2load -t1, and turns its report into a result.
func runLoad(args ...string) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return result{}, fmt.Errorf("%s: %v", args[0], err)
	}
	var rep loadReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return result{}, fmt.Errorf("%s: %v in %q", args[0], err, out)
	}
	if rep.Errors > 0 {
		log.Printf("warning: %s %s: %d errors, the first: %s", args[0], args[1], rep.Errors, rep.FirstError)
	}
	if rep.OK == 0 {
		return result{errors: rep.Errors}, fmt.Errorf("%s: nothing succeeded: %s", args[0], rep.FirstError)
	}
	return result{rps: float64(rep.OK) / rep.Seconds, p50: rep.P50, p99: rep.P99, errors: rep.Errors, requests: float64(rep.OK)}, nil
}

// percentiles returns the median and the 99th percentile of lat.
func percentiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// printIdle opens n keep-alive connections to each target, sends one request
// on each and keeps them idle, and reports the memory each costs.
func printIdle(targets []*target, n int) {
	fmt.Printf("\n## %d idle keep-alive client connections\n\n", n)
	fmt.Println("| target | RSS before | RSS with connections | per connection |")
	fmt.Println("|---|---:|---:|---:|")
	for _, t := range targets {
		if t.pid == 0 {
			continue
		}
		before := t.rss()
		conns, err := openIdle(strings.TrimPrefix(t.url, "http://"), n)
		if err != nil {
			log.Printf("idle %s: %v", t.name, err)
		}
		time.Sleep(time.Second) // let the proxy settle; this is a measurement, not a test
		with := t.rss()
		for _, c := range conns {
			c.Close()
		}
		per := (with - before) / float64(max(len(conns), 1))
		fmt.Printf("| %s | %.1f MiB | %.1f MiB | %.1f KiB |\n", t.name, before/(1<<20), with/(1<<20), per/1024)
		log.Printf("idle %-8s: %d connections, %.1f KiB each", t.name, len(conns), per/1024)
	}
}

// openIdle opens n connections to addr, completes one GET on each, and
// returns them open.
func openIdle(addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return conns, err
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return conns, err
		}
		resp.Body.Close()
		conns = append(conns, c)
	}
	return conns, nil
}
