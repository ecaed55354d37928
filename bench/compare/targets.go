package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// target is one thing under load: a backend directly or a proxy in front of
// both backends.
type target struct {
	name string
	url  string
	pid  int // 0 for direct
}

// start launches the named target in front of backends.
func start(name, dir string, backends []string, procs *[]*exec.Cmd) (*target, error) {
	addr := freeAddr()
	t := &target{name: name, url: "http://" + addr}
	var cmd *exec.Cmd
	switch name {
	case "direct":
		t.url = "http://" + backends[0]
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
		build := exec.Command("go", "build", "-o", bin, "./cmd/vipswap")
		build.Dir = src
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
		cfg := writeFile(dir, name+".yaml", fmt.Sprintf(`
admin: {listen: "%s"}
state: {path: "%s"}
listeners: {prod: "%s", stage: "%s"}
health: {path: /, interval: 1s}
slots:
  blue: {instances: [%s]}
  green: {instances: [%s]}
`, freeAddr(), filepath.Join(dir, name+".db"), addr, freeAddr(), strings.Join(backends, ", "), freeAddr()))
		cmd = exec.Command(bin, "serve", "-c", cfg)
	case "haproxy":
		cfg := writeFile(dir, "haproxy.cfg", fmt.Sprintf(`
global
  maxconn 9950
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
  server b1 %s
  server b2 %s
`, addr, backends[0], backends[1]))
		cmd = exec.Command("haproxy", "-db", "-f", cfg)
	case "nginx":
		cfg := writeFile(dir, "nginx.conf", fmt.Sprintf(`
daemon off;
worker_processes auto;
worker_rlimit_nofile 20000;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 9990; }
http {
  access_log off;
  client_body_temp_path %[1]s;
  proxy_temp_path %[1]s;
  upstream be { server %[3]s; server %[4]s; keepalive 256; }
  server {
    listen %[2]s;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`, dir, addr, backends[0], backends[1]))
		cmd = exec.Command("nginx", "-c", cfg, "-p", dir)
	case "caddy":
		cfg := writeFile(dir, "Caddyfile", fmt.Sprintf(`{
	admin off
	auto_https off
}
http://%s {
	reverse_proxy %s %s {
		lb_policy round_robin
	}
}
`, addr, backends[0], backends[1]))
		cmd = exec.Command("caddy", "run", "--config", cfg, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	default:
		return nil, fmt.Errorf("unknown target %q", name)
	}
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if name == "vipswap" || name == "baseline" || name == "caddy" {
		cmd.Stderr = nil // they log every start line; errors show as a failed waitReady
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	*procs = append(*procs, cmd)
	t.pid = cmd.Process.Pid
	return t, nil
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
