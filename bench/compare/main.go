// Command compare runs vipswap beside HAProxy, nginx and Caddy in front of
// the same two backends, interleaving rounds, and prints one table of
// requests/s, latency, ratios and memory. Run it through bench/run.sh, which
// installs the proxies and wrk.
package main

import (
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
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 2 && os.Args[1] == "backend" {
		runBackend(os.Args[2])
		return
	}
	duration := flag.Duration("duration", 5*time.Second, "length of one wrk run")
	rounds := flag.Int("rounds", 3, "interleaved rounds per scenario")
	idle := flag.Int("idle", 9000, "connections in the idle-connection scenario (0 skips it); HAProxy needs two descriptors per connection and this machine allows 20,000 per process")
	only := flag.String("targets", "direct,vipswap,haproxy,nginx,caddy", "targets to run, comma-separated")
	flag.StringVar(&baselineDir, "baseline", "", "a checkout of another vipswap version, run as target \"baseline\"")
	which := flag.String("scenarios", "", "run only the scenarios whose name contains this (e.g. \"64 keep\")")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "vipswap-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()

	backends := []string{startBackend(&procs), startBackend(&procs)}
	log.Printf("backends on %s", strings.Join(backends, ", "))
	var targets []*target
	for _, name := range strings.Split(*only, ",") {
		t, err := start(name, dir, backends, &procs)
		if err != nil {
			log.Fatalf("start %s: %v", name, err)
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		if err := waitReady(t.url); err != nil {
			log.Fatalf("%s never answered at %s: %v", t.name, t.url, err)
		}
		runWrk(t.url, 64, time.Second, nil) // warm up pools
	}

	fmt.Printf("# vipswap beside HAProxy, nginx and Caddy\n\n%s\n\n", machine())
	fmt.Printf("wrk -t1 for %s per run, %d interleaved rounds, medians shown; two Go backends.\n", *duration, *rounds)
	for _, sc := range scenarios {
		if !strings.Contains(sc.name, *which) {
			continue
		}
		results := make(map[string][]result)
		for r := range *rounds {
			// Each round starts with another target, so no target always
			// runs first (or right after the same other one).
			for k := range targets {
				t := targets[(r+k)%len(targets)]
				t.resetPeak()
				cpu0 := t.cpu()
				res, err := runWrk(t.url+sc.path, sc.conns, *duration, sc.headers)
				if err != nil {
					log.Fatalf("%s %s round %d: %v", sc.name, t.name, r+1, err)
				}
				res.peakRSS = t.peakRSS()
				if n := res.rps * duration.Seconds(); n > 0 {
					res.cpuPerReq = time.Duration(float64(t.cpu()-cpu0) / n)
				}
				results[t.name] = append(results[t.name], res)
				log.Printf("%-28s %-8s round %d: %8.0f req/s p99 %v", sc.name, t.name, r+1, res.rps, res.p99)
			}
		}
		printScenario(sc, targets, results)
	}
	if *idle > 0 {
		printIdle(targets, *idle)
	}
}

// baselineDir is the checkout the "baseline" target is built from.
var baselineDir string

// scenario is one load shape.
type scenario struct {
	name    string
	path    string
	conns   int
	headers []string
}

var scenarios = []scenario{
	{name: "64 keep-alive connections", path: "/", conns: 64},
	{name: "256 keep-alive connections", path: "/", conns: 256},
	{name: "16 KiB responses, 64 connections", path: "/16k", conns: 64},
	{name: "new connection per request, 64", path: "/", conns: 64, headers: []string{"Connection: close"}},
}

func printScenario(sc scenario, targets []*target, results map[string][]result) {
	med := func(name string) result { return median(results[name]) }
	fmt.Printf("\n## %s\n\n", sc.name)
	fmt.Println("| target | requests/s | p50 | p99 | vs HAProxy | vs direct | peak RSS | CPU per request |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, t := range targets {
		m := med(t.name)
		ratio := func(other string) string {
			if o, ok := results[other]; ok && median(o).rps > 0 {
				return fmt.Sprintf("%.2fx", m.rps/median(o).rps)
			}
			return "-"
		}
		peak := 0.0
		for _, r := range results[t.name] {
			peak = max(peak, r.peakRSS)
		}
		cpus := make([]time.Duration, 0, len(results[t.name]))
		for _, r := range results[t.name] {
			cpus = append(cpus, r.cpuPerReq)
		}
		slices.Sort(cpus)
		cpu := "-"
		if t.name != "direct" && len(cpus) > 0 {
			cpu = fmt.Sprintf("%.1f µs", float64(cpus[len(cpus)/2])/1e3)
		}
		fmt.Printf("| %s | %.0f | %s | %s | %s | %s | %.1f MiB | %s |\n", t.name, m.rps, ms(m.p50), ms(m.p99), ratio("haproxy"), ratio("direct"), peak/(1<<20), cpu)
	}
	if v, ok := results["vipswap"]; ok {
		if c, ok := results["caddy"]; ok {
			fmt.Printf("\nvipswap p99 / HAProxy p99: %s; vipswap / Caddy requests/s: %.2fx\n",
				p99Ratio(median(v), results["haproxy"]), median(v).rps/median(c).rps)
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

// runBackend serves 60 bytes on / and 16 KiB on /16k.
func runBackend(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ln.Addr().String())
	small := []byte(`{"slot":"bench","version":"1","instance":"backend-0000000"}` + "\n")
	big := []byte(strings.Repeat("x", 16<<10))
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/16k" {
			w.Write(big)
			return
		}
		w.Write(small)
	}))
}

func startBackend(procs *[]*exec.Cmd) string {
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(self, "backend", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	*procs = append(*procs, cmd)
	buf := make([]byte, 64)
	n, err := out.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	return strings.TrimSpace(string(buf[:n]))
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(url string) error {
	var err error
	for range 100 {
		var resp *http.Response
		if resp, err = http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func writeFile(dir, name, content string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		log.Fatal(err)
	}
	return p
}
