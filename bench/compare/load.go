package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// result is one wrk run.
type result struct {
	rps      float64
	p50, p99 time.Duration
	peakRSS  float64
	// cpuPerReq is the target's CPU time per request served in the run.
	cpuPerReq time.Duration
}

var (
	rpsRE     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	latencyRE = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	errorsRE  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrk runs wrk -t1 against url and parses its summary.
func runWrk(url string, conns int, d time.Duration, headers []string) (result, error) {
	args := []string{"-t1", "-c" + strconv.Itoa(conns), "-d" + d.String(), "--latency"}
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
	if e := errorsRE.FindString(s); e != "" && !strings.Contains(strings.Join(headers, ""), "close") {
		log.Printf("warning: %s: %s", url, e)
	}
	return r, nil
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
