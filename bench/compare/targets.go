//go:build linux

package main

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// target is one thing under load: a backend directly or a proxy in front of
// both backends, in one family of scenarios.
type target struct {
	name   string
	family string
	url    string // http:// or https:// and the address
	addr   string
	pid    int    // 0 for direct
	skip   string // why it does not run this family's scenarios
	log    string // where its standard error goes, if not to ours
	proc   *proc
}

// benchEnv is what every target is started with.
type benchEnv struct {
	dir          string
	backends     []string // HTTP/1.1
	grpcBackends []string // gRPC over h2c
	cert         *certFiles
}

// start launches the named target for a family of scenarios in front of
// the backends.
func start(name, fam string, env *benchEnv) (*target, error) {
	dir, backends, g := env.dir, env.backends, env.grpcBackends
	file := name + "-" + fam // this target's files in dir
	if fam == famScale {
		fam = famHTTP // configured as for the cleartext scenarios
	}
	addr := freeAddr()
	t := &target{name: name, family: fam, addr: addr, url: "http://" + addr}
	if fam == famTLS {
		t.url = "https://" + addr
	}
	var cmd *exec.Cmd
	switch name {
	case "direct":
		t.addr = backends[0]
		if fam == famGRPC {
			t.addr = g[0]
		}
		t.url = "http://" + t.addr
		return t, nil
	case "vipswap", "baseline":
		// baseline is vipswap built from another checkout (-baseline), run
		// in the same interleaved rounds to compare two versions.
		src, bin := ".", filepath.Join(dir, name)
		if name == "baseline" {
			if baselineDir == "" {
				return nil, fmt.Errorf("target baseline needs -baseline DIR")
			}
			src = baselineDir
		}
		if _, err := os.Stat(bin); err != nil {
			build := exec.Command("go", "build", "-o", bin, "./cmd/vipswap")
			build.Dir = src
			if out, err := build.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("build %s: %v\n%s", name, err, out)
			}
		}
		// Each family's process runs its own copy of the binary, as a
		// vipswap runs alone on its host: the pages of a binary that two
		// processes map stay resident in both (vipswap gives back those
		// it alone maps once started).
		own := filepath.Join(dir, file)
		if err := copyFile(bin, own); err != nil {
			return nil, err
		}
		bin = own
		prod, health, slots := fmt.Sprintf("%q", addr), "{path: /, interval: 1s}", [2]string{
			"{instances: [" + strings.Join(backends, ", ") + "]}",
			"{instances: [" + freeAddr() + "]}",
		}
		switch fam {
		case famTLS:
			prod = fmt.Sprintf("{addr: %q, tls: {certs: [{cert: %q, key: %q}]}}", addr, env.cert.cert, env.cert.key)
		case famGRPC:
			prod = fmt.Sprintf("{addr: %q, h2c: true}", addr)
			health = "{type: grpc, interval: 1s}"
			slots = [2]string{
				"{protocol: h2c, instances: [" + strings.Join(g, ", ") + "]}",
				"{protocol: h2c, instances: [" + freeAddr() + "]}",
			}
		}
		// The connection limits HAProxy (maxconn) and nginx
		// (worker_connections) are given: by default vipswap shares its
		// descriptors out between its listeners and the instances, which
		// here (20,000) would close idle connections beyond about 3,800,
		// and caps each client (the load generator is one) at 256.
		cfg := writeFile(dir, file+".yaml", fmt.Sprintf(`
admin: {listen: "%s"}
state: {path: "%s"}
listeners: {prod: %s, stage: "%s"}
proxy: {max_connections: 10100, max_connections_per_client: 0}
health: %s
slots:
  blue: %s
  green: %s
`, freeAddr(), filepath.Join(dir, file+".db"), prod, freeAddr(), health, slots[0], slots[1]))
		cmd = exec.Command(bin, "serve", "-c", cfg)
		if name == "baseline" && baselineEnv != "" {
			cmd.Env = append(os.Environ(), strings.Fields(baselineEnv)...)
		}
	case "haproxy":
		bind, server := addr, ""
		b := backends
		switch fam {
		case famTLS:
			bind = addr + " ssl crt " + env.cert.both + " alpn h2,http/1.1"
		case famGRPC:
			bind, server, b = addr+" proto h2", " proto h2", g
		}
		cfg := writeFile(dir, file+".cfg", fmt.Sprintf(`
global
  maxconn 10100
  no strict-limits
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind %s
  default_backend be
backend be
  balance roundrobin
  server b1 %s%s
  server b2 %s%s
`, bind, b[0], server, b[1], server))
		cmd = exec.Command("haproxy", "-db", "-f", cfg)
	case "nginx":
		listen := addr
		location := `proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";`
		b := backends
		// nginx ends a client connection after 1,000 requests by default,
		// and h2load does not reconnect: the streams in flight would fail.
		// HAProxy, Caddy and vipswap have no such limit.
		limit := " keepalive_requests 1000000;"
		switch fam {
		case famHTTP:
			limit = "" // as in the runs this benchmark has published
		case famTLS:
			// nginx 1.22 (Debian 12) turns HTTP/2 on in listen (1.25 and
			// later say "http2 on;"), and leaves TLS 1.3 off by default
			// (before 1.23.4), which every other target has on.
			listen = fmt.Sprintf("%s ssl http2; ssl_protocols TLSv1.2 TLSv1.3; ssl_certificate %s; ssl_certificate_key %s", addr, env.cert.cert, env.cert.key)
		case famGRPC:
			listen, location, b = addr+" http2", "grpc_pass grpc://be;", g
		}
		// Its workers write large bodies to temporary files in pidDir,
		// under this program's private temporary directory: run as root,
		// nginx would switch them to a user that cannot reach it.
		user := ""
		if os.Geteuid() == 0 {
			user = "user root;"
		}
		pidDir := filepath.Join(dir, file)
		if err := os.MkdirAll(pidDir, 0o755); err != nil {
			return nil, err
		}
		cfg := writeFile(dir, file+".conf", fmt.Sprintf(`
daemon off;
%[7]s
worker_processes auto;
worker_rlimit_nofile 20000;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path %[1]s;
  proxy_temp_path %[1]s;
  upstream be { server %[3]s; server %[4]s; keepalive 256; }
  server {
    listen %[2]s;%[6]s
    location / { %[5]s }
  }
}
`, pidDir, listen, b[0], b[1], location, limit, user))
		cmd = exec.Command("nginx", "-c", cfg, "-p", pidDir)
	case "caddy":
		site, protocols, up := "http://"+addr, "h1 h2", backends[0]+" "+backends[1]
		tls := ""
		switch fam {
		case famTLS:
			site, tls = "https://"+addr, fmt.Sprintf("\ttls %s %s\n", env.cert.cert, env.cert.key)
		case famGRPC:
			protocols, up = "h1 h2c", "h2c://"+g[0]+" h2c://"+g[1]
		}
		cfg := writeFile(dir, file+".Caddyfile", fmt.Sprintf(`{
	admin off
	auto_https off
	servers {
		protocols %s
	}
}
%s {
%s	reverse_proxy %s {
		lb_policy round_robin
	}
}
`, protocols, site, tls, up))
		cmd = exec.Command("caddy", "run", "--config", cfg, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	default:
		return nil, fmt.Errorf("unknown target %q", name)
	}
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if name == "vipswap" || name == "baseline" || name == "caddy" {
		// They log every start; their log is shown when they fail.
		t.log = filepath.Join(dir, file+".log")
		f, err := os.Create(t.log)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		cmd.Stderr = f
	}
	p, err := launch(cmd)
	if err != nil {
		return nil, err
	}
	t.proc, t.pid = p, cmd.Process.Pid
	return t, nil
}

// waitReady waits until t answers its family's check (the backend's 200,
// or a gRPC call's OK and answer) or gives up after 15 s, or as soon as
// its process has exited.
func (t *target) waitReady(env *benchEnv) error {
	check := func() error {
		switch t.family {
		case famTLS:
			st, err := checkHTTPS(t.url+"/", env.cert.roots, false)
			if err == nil {
				log.Printf("%s (tls): %s", t.name, st)
			}
			return err
		case famGRPC:
			return checkGRPC(t.addr)
		}
		resp, err := http.Get(t.url + "/")
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || !strings.Contains(string(body), backendMark) {
			return fmt.Errorf("status %d, body %.60q: not the backend's answer", resp.StatusCode, body)
		}
		return nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if t.proc != nil && t.proc.exited() {
			return fmt.Errorf("exited at start (%v)%s", t.proc.err, t.lastLog())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v%s", err, t.lastLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lastLog returns the last lines of the target's log that say something
// went wrong, or its last line.
func (t *target) lastLog() string {
	if t.log == "" {
		return ""
	}
	raw, _ := os.ReadFile(t.log)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var bad []string
	for _, l := range lines {
		ll := strings.ToLower(l)
		if strings.Contains(ll, "error") || strings.Contains(ll, "unknown") || strings.Contains(ll, "fatal") {
			bad = append(bad, strings.TrimSpace(l))
		}
	}
	if len(bad) == 0 {
		bad = lines[len(lines)-1:]
	}
	if len(bad) > 3 {
		bad = bad[len(bad)-3:]
	}
	for i, l := range bad {
		bad[i] = configPos.ReplaceAllString(l, "")
	}
	return "; its log: " + strings.Join(bad, " / ")
}

// configPos is the file and line a configuration error starts with.
var configPos = regexp.MustCompile(`\S+\.yaml:\d+: `)

// proc is a child process in its own process group.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// launch starts cmd in its own process group, so that stopping it stops
// its children too (nginx's workers), and keeps it for stopAll.
func launch(cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stopAll stops every process launch started: SIGTERM to its group, then
// SIGKILL after 5 s.
func stopAll() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	procs = nil
}

// pids returns the target's process and its children (nginx's workers).
func (t *target) pids() []int {
	if t.pid == 0 {
		return nil
	}
	pids := []int{t.pid}
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", t.pid, t.pid))
	for _, f := range strings.Fields(string(raw)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// resetPeak starts a new peak-RSS window (Linux clear_refs 5).
func (t *target) resetPeak() {
	for _, pid := range t.pids() {
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}

// peakRSS sums the processes' peak resident memory since resetPeak, in bytes.
func (t *target) peakRSS() float64 { return t.memory("VmHWM:") }

// rss sums the processes' current resident memory, in bytes.
func (t *target) rss() float64 { return t.memory("VmRSS:") }

func (t *target) memory(field string) float64 {
	total := 0.0
	for _, pid := range t.pids() {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, field); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				total += kb * 1024
			}
		}
	}
	return total
}

// cpu sums the processes' CPU time (user and system) so far.
func (t *target) cpu() time.Duration {
	var ticks int64
	for _, pid := range t.pids() {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		rest := string(raw)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// copyFile copies the executable at from to a new file to, on disk before
// it returns (as an installed binary is: pages still being written out
// cannot be given back).
func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
