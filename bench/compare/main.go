//go:build linux

// The benchmark reads /proc and runs on Linux only.

// Command compare runs vipswap beside HAProxy, nginx and Caddy in front of
// the same two backends, interleaving rounds, and prints a table per
// scenario of requests/s, latency, ratios, errors, memory and CPU: cleartext
// HTTP/1.1 (wrk), TLS (wrk, and its own client for a full handshake per
// request), HTTP/2 over TLS (h2load) and gRPC over h2c (its own grpc-go
// client). Run it through bench/run.sh, which installs the proxies, wrk and
// h2load.
package main

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 {
		if sub, ok := subcommands[os.Args[1]]; ok {
			sub(os.Args[2:])
			return
		}
	}
	duration := flag.Duration("duration", 5*time.Second, "length of one load run")
	rounds := flag.Int("rounds", 3, "interleaved rounds per scenario")
	idle := flag.Int("idle", 9000, "connections in the idle-connection scenario (0 skips it); HAProxy needs two descriptors per connection and this machine allows 20,000 per process")
	only := flag.String("targets", "direct,vipswap,haproxy,nginx,caddy", "targets to run, comma-separated")
	flag.StringVar(&baselineDir, "baseline", "", "a checkout of another vipswap version, run as target \"baseline\"")
	flag.StringVar(&baselineEnv, "baseline-env", "", "environment variables for the baseline target, space-separated (e.g. GOGC=100: with -baseline set to this checkout, compares a setting)")
	which := flag.String("scenarios", "", "run only these scenarios, comma-separated: a group (http, scale, tls, h2, grpc, idle) or part of a scenario's name (e.g. \"64 keep\"), any case")
	flag.IntVar(&scaleConns, "scale", 10000, "client connections in the scale scenario, of which 1,000 (or all, if fewer) under load and the others idle; 0 skips it")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "vipswap-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	defer stopAll()
	fatalf := func(format string, args ...any) {
		log.Printf(format, args...)
		stopAll()
		os.RemoveAll(dir)
		os.Exit(1)
	}

	var chosen []scenario
	families := map[string]bool{}
	for _, sc := range scenarios {
		if sc.idle > 0 {
			if scaleConns <= 0 {
				continue
			}
			sc.conns = min(sc.conns, scaleConns)
			sc.idle = scaleConns - sc.conns
			sc.name = fmt.Sprintf("%d keep-alive connections, %d active", scaleConns, sc.conns)
		}
		if selected(*which, sc.group, sc.name) {
			chosen = append(chosen, sc)
			families[sc.family] = true
		}
	}
	runIdle := *idle > 0 && selected(*which, "idle", "idle keep-alive client connections")
	if runIdle {
		families[famHTTP] = true
	}
	if len(chosen) == 0 && !runIdle {
		fatalf("no scenario matches -scenarios %q", *which)
	}

	env := &benchEnv{dir: dir}
	for range 2 {
		h, g, err := startBackend()
		if err != nil {
			fatalf("backend: %v", err)
		}
		env.backends, env.grpcBackends = append(env.backends, h), append(env.grpcBackends, g)
	}
	log.Printf("backends on %s (HTTP/1.1), %s (gRPC over h2c)", strings.Join(env.backends, ", "), strings.Join(env.grpcBackends, ", "))
	if families[famTLS] {
		if env.cert, err = makeCert(dir); err != nil {
			fatalf("certificate: %v", err)
		}
	}

	// Each family of scenarios has its own process of each proxy, so
	// that memory and CPU are those of that family's work.
	targets := map[string][]*target{}
	for _, fam := range []string{famHTTP, famScale, famTLS, famGRPC} {
		if !families[fam] {
			continue
		}
		for _, name := range strings.Split(*only, ",") {
			if name == "direct" && fam == famTLS {
				continue // the backends speak cleartext only
			}
			t, err := start(name, fam, env)
			if err != nil {
				if fam == famHTTP || fam == famScale {
					fatalf("start %s: %v", name, err)
				}
				t = &target{name: name, family: fam, skip: "could not start: " + err.Error()}
			}
			targets[fam] = append(targets[fam], t)
		}
	}
	for _, fam := range []string{famHTTP, famScale, famTLS, famGRPC} {
		for _, t := range targets[fam] {
			if t.skip != "" {
				log.Printf("%s (%s): not run: %s", t.name, fam, t.skip)
				continue
			}
			if err := t.waitReady(env); err != nil {
				if fam == famHTTP || fam == famScale {
					fatalf("%s never answered at %s: %v", t.name, t.url, err)
				}
				t.skip = "never answered: " + err.Error()
				log.Printf("%s (%s): not run: %s", t.name, fam, t.skip)
				continue
			}
			// Warm up pools.
			switch fam {
			case famHTTP, famScale, famTLS:
				runWrk(t.url, 64, time.Second, nil, "")
			case famGRPC:
				runLoad("grpcload", t.addr, "4", "64", "1s")
			}
		}
	}

	fmt.Printf("# vipswap beside HAProxy, nginx and Caddy\n\n%s\n\n", machine())
	fmt.Printf("One load generator at a time, on one thread, for %s per run, %d interleaved rounds, medians shown; two Go backends.\n", *duration, *rounds)
	var failures, skipped []string
	for _, sc := range chosen {
		results := make(map[string][]result)
		notRun := make(map[string]string)
		ts := targets[sc.family]
		for _, t := range ts {
			if t.skip != "" {
				notRun[t.name] = t.skip
			} else if sc.load == loadH2 {
				if _, err := checkHTTPS(t.url+sc.path, env.cert.roots, true); err != nil {
					notRun[t.name] = err.Error()
					log.Printf("%-28s %-8s: not run: %v", sc.name, t.name, err)
				}
			}
		}
		for r := range *rounds {
			// Each round starts with another target, so no target always
			// runs first (or right after the same other one).
			for k := range ts {
				t := ts[(r+k)%len(ts)]
				if _, skip := notRun[t.name]; skip {
					continue
				}
				t.resetPeak()
				rss0 := t.rss()
				pr := startProbe(t, r == 0) // perf in the first round only: it slows every system call
				cpu0 := t.cpu()
				res, err := sc.run(t, env, *duration)
				n := res.requests
				if n == 0 {
					n = res.rps * duration.Seconds()
				}
				res.work = pr.done(n)
				traced := pr.perf != nil
				if err != nil {
					msg := fmt.Sprintf("%s, %s, round %d: %v", sc.name, t.name, r+1, err)
					log.Print(msg)
					failures = append(failures, msg)
					notRun[t.name] = "failed: " + firstLine(err.Error())
					delete(results, t.name)
					continue
				}
				res.peakRSS = t.peakRSS()
				if t.pid != 0 {
					res.perConn = max(res.peakRSS-rss0, 0) / float64(max(sc.conns+sc.idle, 1))
				}
				if n := res.rps * duration.Seconds(); n > 0 {
					res.cpuPerReq = time.Duration(float64(t.cpu()-cpu0) / n)
				}
				res.traced = traced
				results[t.name] = append(results[t.name], res)
				log.Printf("%-28s %-8s round %d: %8.0f req/s p99 %v", sc.name, t.name, r+1, res.rps, res.p99)
			}
		}
		printScenario(sc, ts, results, notRun)
		per := "request"
		if sc.load == loadGRPC {
			per = "call"
		}
		printWork(ts, results, notRun, per)
		for _, t := range ts {
			if why, ok := notRun[t.name]; ok && !strings.HasPrefix(why, "failed: ") {
				skipped = append(skipped, fmt.Sprintf("%s, %s: %s", sc.name, t.name, why))
			}
		}
	}
	if runIdle {
		printIdle(targets[famHTTP], *idle)
	}
	if len(skipped) > 0 {
		log.Printf("%d cells not run:\n  %s", len(skipped), strings.Join(skipped, "\n  "))
	}
	if len(failures) > 0 {
		log.Printf("%d runs failed:\n  %s", len(failures), strings.Join(failures, "\n  "))
		stopAll()
		os.RemoveAll(dir)
		os.Exit(1)
	}
}

// baselineDir is the checkout the "baseline" target is built from, and
// baselineEnv what is added to its environment.
var baselineDir, baselineEnv string

// Families of scenarios: each is served by its own process of each target.
const (
	famHTTP = "http" // cleartext HTTP/1.1
	// famScale is cleartext HTTP/1.1 too, in processes of its own: ten
	// thousand connections and 1 MiB bodies leave memory behind that
	// would count in the other scenarios' figures.
	famScale = "scale"
	famTLS   = "tls"  // HTTPS, HTTP/1.1 and h2 by ALPN
	famGRPC  = "grpc" // gRPC, h2c with prior knowledge
)

// Load generators.
const (
	loadWrk       = "wrk"       // wrk -t1
	loadHandshake = "handshake" // this program's TLS client, a full handshake per request
	loadH2        = "h2load"    // h2load -t1 over TLS with ALPN h2
	loadGRPC      = "grpc"      // this program's gRPC client
)

// scenario is one load shape.
type scenario struct {
	name    string
	group   string // what -scenarios may name it by
	family  string
	load    string
	path    string
	conns   int
	streams int // concurrent streams per connection (h2load), or calls in all (gRPC)
	headers []string
	// idle is how many more connections are opened, each after one
	// request, and left idle during the run (the scale scenario).
	idle int
	// body, when set, is the size of the body of every request, a POST.
	body int
}

// scaleConns is the number of client connections in the scale scenario.
var scaleConns int

var scenarios = []scenario{
	{name: "64 keep-alive connections", group: "http", family: famHTTP, load: loadWrk, path: "/", conns: 64},
	{name: "256 keep-alive connections", group: "http", family: famHTTP, load: loadWrk, path: "/", conns: 256},
	{name: "16 KiB responses, 64 connections", group: "http", family: famHTTP, load: loadWrk, path: "/16k", conns: 64},
	{name: "new connection per request, 64", group: "http", family: famHTTP, load: loadWrk, path: "/", conns: 64, headers: []string{"Connection: close"}},
	{name: "1 KiB POSTs, 64 connections", group: "http", family: famHTTP, load: loadWrk, path: "/", conns: 64, body: 1 << 10},
	{name: "keep-alive connections, most idle", group: "scale", family: famScale, load: loadWrk, path: "/", conns: 1000, idle: 1}, // named and sized from -scale
	{name: "1 MiB downloads, 16 connections", group: "scale", family: famScale, load: loadWrk, path: "/1m", conns: 16},
	{name: "1 MiB uploads, 16 connections", group: "scale", family: famScale, load: loadWrk, path: "/", conns: 16, body: 1 << 20},
	{name: "TLS, 64 keep-alive connections", group: "tls", family: famTLS, load: loadWrk, path: "/", conns: 64},
	{name: "TLS, new connection and full handshake per request, 64", group: "tls", family: famTLS, load: loadHandshake, path: "/", conns: 64},
	{name: "HTTP/2 over TLS, 4 connections x 100 streams", group: "h2", family: famTLS, load: loadH2, path: "/", conns: 4, streams: 100},
	{name: "gRPC unary over h2c, 4 connections, 64 calls in flight", group: "grpc", family: famGRPC, load: loadGRPC, conns: 4, streams: 64},
}

// groups are the names -scenarios takes for a whole group.
var groups = []string{"http", "scale", "tls", "h2", "grpc", "idle"}

// selected says whether filter (comma-separated groups or parts of names,
// any case; empty: all) picks a scenario.
func selected(filter, group, name string) bool {
	if filter == "" {
		return true
	}
	for _, f := range strings.Split(filter, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if slices.Contains(groups, f) {
			if f == group {
				return true
			}
		} else if f != "" && strings.Contains(strings.ToLower(name), f) {
			return true
		}
	}
	return false
}

// run runs the scenario's load against t once.
func (sc scenario) run(t *target, env *benchEnv, d time.Duration) (result, error) {
	switch sc.load {
	case loadWrk:
		var script string
		if sc.body > 0 {
			script = writeFile(env.dir, fmt.Sprintf("post%d.lua", sc.body), fmt.Sprintf(
				"wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", %d)\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n", sc.body))
		}
		if sc.idle > 0 {
			conns, err := openIdle(strings.TrimPrefix(t.url, "http://"), sc.idle)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			if err != nil {
				return result{}, fmt.Errorf("opening %d idle connections: %v (after %d)", sc.idle, err, len(conns))
			}
		}
		return runWrk(t.url+sc.path, sc.conns, d, sc.headers, script)
	case loadHandshake:
		return runLoad("handshake", t.addr, strconv.Itoa(sc.conns), d.String(), env.cert.cert)
	case loadH2:
		return runH2load(t.url+sc.path, env.dir, sc.conns, sc.streams, d)
	case loadGRPC:
		return runLoad("grpcload", t.addr, strconv.Itoa(sc.conns), strconv.Itoa(sc.streams), d.String())
	}
	return result{}, fmt.Errorf("unknown load %q", sc.load)
}

// subcommands are the roles this program plays in its own child processes.
var subcommands = map[string]func(args []string){
	"backend": func(args []string) { runBackend(args[0]) },
	"handshake": func(args []string) { // ADDR CONNS DURATION CERT
		conns, _ := strconv.Atoi(args[1])
		d, _ := time.ParseDuration(args[2])
		pemBytes, err := os.ReadFile(args[3])
		if err != nil {
			log.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pemBytes)
		printReport(runHandshakeLoad(args[0], conns, d, roots))
	},
	"grpcload": func(args []string) { // ADDR CONNS CALLS DURATION
		conns, _ := strconv.Atoi(args[1])
		calls, _ := strconv.Atoi(args[2])
		d, _ := time.ParseDuration(args[3])
		printReport(runGRPCLoad(args[0], max(conns, 1), max(calls, 1), d))
	},
}

func printReport(r loadReport) {
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		log.Fatal(err)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func printScenario(sc scenario, targets []*target, results map[string][]result, notRun map[string]string) {
	med := func(name string) result { return median(results[name]) }
	fmt.Printf("\n## %s\n\n", sc.name)
	unit, per := "requests/s", "request"
	if sc.load == loadGRPC {
		unit, per = "calls/s", "call"
	}
	fmt.Printf("| target | %s | p50 | p99 | vs HAProxy | vs Caddy | vs direct | errors | peak RSS | CPU per %s |\n", unit, per)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range targets {
		if why, ok := notRun[t.name]; ok {
			fmt.Printf("| %s | not run: %s | | | | | | | | |\n", t.name, strings.ReplaceAll(why, "|", "/"))
			continue
		}
		m := med(t.name)
		ratio := func(other string) string {
			if o, ok := results[other]; ok && median(o).rps > 0 {
				return fmt.Sprintf("%.2fx", m.rps/median(o).rps)
			}
			return "-"
		}
		peak := 0.0
		errs := 0
		for _, r := range results[t.name] {
			peak = max(peak, r.peakRSS)
			errs += r.errors
		}
		cpus := make([]time.Duration, 0, len(results[t.name]))
		for _, r := range results[t.name] {
			if !r.traced || len(results[t.name]) == 1 {
				cpus = append(cpus, r.cpuPerReq)
			}
		}
		slices.Sort(cpus)
		cpu := "-"
		if t.name != "direct" && len(cpus) > 0 {
			cpu = fmt.Sprintf("%.1f µs", float64(cpus[len(cpus)/2])/1e3)
		}
		fmt.Printf("| %s | %.0f | %s | %s | %s | %s | %s | %d | %.1f MiB | %s |\n", t.name, m.rps, ms(m.p50), ms(m.p99), ratio("haproxy"), ratio("caddy"), ratio("direct"), errs, peak/(1<<20), cpu)
	}
	if v, ok := results["vipswap"]; ok {
		if c, ok := results["caddy"]; ok {
			fmt.Printf("\nvipswap p99 / HAProxy p99: %s; vipswap / Caddy %s: %.2fx\n",
				p99Ratio(median(v), results["haproxy"]), unit, median(v).rps/median(c).rps)
		}
	}
}

func p99Ratio(v result, h []result) string {
	if len(h) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", float64(v.p99)/float64(median(h).p99))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// median returns the result with the median requests/s, and the median
// latencies.
func median(rs []result) result {
	if len(rs) == 0 {
		return result{}
	}
	by := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return result{
		rps: by(func(r result) float64 { return r.rps }),
		p50: time.Duration(by(func(r result) float64 { return float64(r.p50) })),
		p99: time.Duration(by(func(r result) float64 { return float64(r.p99) })),
	}
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name\t: "); ok {
				cpu = name
				break
			}
		}
	}
	versions := []string{runtime.Version()}
	for _, v := range [][]string{{"haproxy", "-v"}, {"nginx", "-v"}, {"caddy", "version"}} {
		out, _ := exec.Command(v[0], v[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		versions = append(versions, line)
	}
	return fmt.Sprintf("Machine: %d cores (%s), %s.", runtime.NumCPU(), cpu, strings.Join(versions, "; "))
}

// backendMark is in every answer of the backends, so a check can tell the
// backend's answer from a proxy's own.
const backendMark = `"slot":"bench"`

// runBackend serves 60 bytes on /, 16 KiB on /16k and 1 MiB on /1m over
// HTTP/1.1 on addr (reading any request body whole first),
// and the gRPC echo service over h2c on another port of the same host;
// it prints both addresses on one line.
func runBackend(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(addr)
	gln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().String(), gln.Addr().String())
	go func() { log.Fatal(serveGRPC(gln)) }()
	small := []byte(`{"slot":"bench","version":"1","instance":"backend-0000000"}` + "\n")
	big := []byte(strings.Repeat("x", 16<<10))
	huge := []byte(strings.Repeat("x", 1<<20))
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/16k":
			w.Write(big)
			return
		case "/1m":
			w.Write(huge)
			return
		}
		w.Write(small)
	})))
}

// startBackend starts a backend process and returns its HTTP and gRPC
// addresses.
func startBackend() (httpAddr, grpcAddr string, err error) {
	self, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	cmd := exec.Command(self, "backend", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", "", err
	}
	cmd.Stderr = os.Stderr
	if _, err := launch(cmd); err != nil {
		return "", "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return "", "", fmt.Errorf("no addresses from the backend: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("backend said %q", line)
	}
	return f[0], f[1], nil
}

func freeAddr() string {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		// The system may hand out a port again once it is closed: a
		// target given the same port twice would not start.
		if !handedOut[addr] {
			handedOut[addr] = true
			return addr
		}
	}
}

// handedOut holds the addresses freeAddr returned.
var handedOut = map[string]bool{}

func writeFile(dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		log.Fatal(err)
	}
	return p
}
