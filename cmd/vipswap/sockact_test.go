package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// activation holds listening sockets as systemd's .socket unit does, and
// starts vipswap on them as systemd's service does: LISTEN_FDS,
// LISTEN_PID (the shell's pid, which execs vipswap), LISTEN_FDNAMES, and
// NOTIFY_SOCKET to hear READY=1.
type activation struct {
	cfgPath string
	files   []*os.File
	names   []string
	notify  *net.UnixConn
}

// newActivation binds prod, stage and admin on loopback and writes a
// configuration naming those addresses, with slots.
func newActivation(t *testing.T, dir, slots string) *activation {
	t.Helper()
	a := &activation{cfgPath: filepath.Join(dir, "vipswap.yaml")}
	addrs := map[string]string{}
	for _, name := range []string{"prod", "stage", "admin"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close() // f holds the socket
		t.Cleanup(func() { f.Close() })
		a.files, a.names, addrs[name] = append(a.files, f), append(a.names, name), ln.Addr().String()
	}
	cfg := strings.NewReplacer("prod: 127.0.0.1:0", "prod: "+addrs["prod"], "stage: 127.0.0.1:0", "stage: "+addrs["stage"],
		"listen: 127.0.0.1:0", "listen: "+addrs["admin"]).Replace(testConfig(dir, slots))
	if err := os.WriteFile(a.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a.notify = c
	return a
}

// start starts "vipswap serve" on the sockets.
func (a *activation) start(t *testing.T) *vstest.Process {
	t.Helper()
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, vstest.Binary(t), "serve", "-c", a.cfgPath)
	cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_FDS=%d", len(a.files)), "LISTEN_FDNAMES="+strings.Join(a.names, ":"),
		"NOTIFY_SOCKET="+a.notify.LocalAddr().String())
	cmd.ExtraFiles = a.files
	return vstest.StartCmd(t, cmd)
}

// waitReady waits for READY=1 on the notification socket.
func (a *activation) waitReady(t *testing.T) {
	t.Helper()
	a.notify.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf := make([]byte, 4096)
	for {
		n, err := a.notify.Read(buf)
		if err != nil {
			t.Fatalf("no READY=1 from vipswap: %v", err)
		}
		if strings.Contains("\n"+string(buf[:n])+"\n", "\nREADY=1\n") {
			return
		}
	}
}

// connLoad sends GET requests, each on a new connection (what a crash
// costs shows per connection), from bounded clients, for a bounded time,
// and tells refused connections from other failures.
type connLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu                  sync.Mutex // guards what follows
	ok, refused, failed int
	longest             time.Duration
	errs                []string
}

func startConnLoad(url string, clients int, limit time.Duration) *connLoad {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	l := &connLoad{cancel: cancel}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	for range clients {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				resp, err := hc.Get(url)
				var status int
				if err == nil {
					status = resp.StatusCode
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				took := time.Since(start)
				l.mu.Lock()
				switch {
				case ctx.Err() != nil && err != nil: // the load's own end
				case errors.Is(err, syscall.ECONNREFUSED):
					l.refused++
				case err != nil || status != http.StatusOK:
					l.failed++
					if len(l.errs) < 10 {
						l.errs = append(l.errs, fmt.Sprintf("status %d, err %v", status, err))
					}
				default:
					l.ok++
					l.longest = max(l.longest, took)
				}
				l.mu.Unlock()
			}
		})
	}
	return l
}

func (l *connLoad) oks() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok
}

func (l *connLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// TestSocketActivationKill9: vipswap serves sockets it inherited (as from
// a systemd .socket unit); kill -9 it under load and start it again at once
// on the same sockets: no connection is refused: those made while it was
// down wait in the backlog and are served by the new process. What a crash
// costs is the requests in flight on the killed process, at most one per
// client; the test reports them and the longest wait.
func TestSocketActivationKill9(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	a := newActivation(t, dir, staticSlots(addrs))
	first := a.start(t)
	a.waitReady(t)
	sw := switchtest.Attach(t, first)
	sw.WaitHealthy(t)
	if want := "http://" + a.fileAddr(t, 0); sw.Prod != want {
		t.Fatalf("prod is %s, want the inherited %s", sw.Prod, want)
	}

	const clients = 8
	load := startConnLoad(sw.Prod+"/api/test", clients, 60*time.Second)
	defer load.stop()
	waitOKs(t, load, 200)
	first.Signal(t, syscall.SIGKILL)
	first.Wait(t, 10*time.Second)
	killed := time.Now()
	before := load.oks()
	second := a.start(t)
	restarted := time.Since(killed)
	a.waitReady(t)
	down := time.Since(killed)
	again := switchtest.Attach(t, second)
	waitOKs(t, load, before+200)
	load.stop()

	m := regexpStartToReady.FindStringSubmatch(metricsText(t, again.Admin))
	if m == nil {
		t.Fatal("no vipswap_start_to_ready_seconds in /metrics")
	}
	t.Logf("kill -9 under load (%d clients, a new connection per request), vipswap started again %s later and ready %s after the kill: %d answered, %d refused, %d failed (in flight on the killed process), longest wait %s; start to ready %ss; failures: %v",
		clients, restarted.Round(time.Millisecond), down.Round(time.Millisecond), load.ok, load.refused, load.failed, load.longest.Round(time.Millisecond), m[1], load.errs)
	if load.refused != 0 {
		t.Fatalf("%d connections refused, want 0", load.refused)
	}
	if load.failed > clients {
		t.Fatalf("%d requests failed, more than the %d that can be in flight at the kill: %v", load.failed, clients, load.errs)
	}
}

// fileAddr returns the address of the i-th socket.
func (a *activation) fileAddr(t *testing.T, i int) string {
	t.Helper()
	ln, err := net.FileListener(a.files[i])
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitOKs waits until load has n answers.
func waitOKs(t *testing.T, load *connLoad, n int) {
	t.Helper()
	vstest.WaitFor(t, 30*time.Second, func() error {
		if got := load.oks(); got < n {
			load.mu.Lock()
			defer load.mu.Unlock()
			return fmt.Errorf("%d answers, want %d (refused %d, failed %d: %v)", got, n, load.refused, load.failed, load.errs)
		}
		return nil
	})
}

var regexpStartToReady = regexp.MustCompile(`(?m)^vipswap_start_to_ready_seconds (\S+)$`)

// metricsText returns what admin's /metrics says.
func metricsText(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSocketActivationMismatch: an inherited socket that fits no listener,
// or a listener whose address is not its named socket's, stops vipswap at
// start with one line naming both.
func TestSocketActivationMismatch(t *testing.T) {
	t.Parallel()
	slots := staticSlots(map[string][]string{"blue": {"127.0.0.1:1"}, "green": {"127.0.0.1:2"}})
	for name, c := range map[string]struct {
		change func(a *activation)
		want   string
		also   string
	}{
		"a socket of no listener": {func(a *activation) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, err := ln.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			ln.Close()
			t.Cleanup(func() { f.Close() })
			a.files[2], a.names[2] = f, "metrics" // in place of admin's
		}, `vipswap serve: listeners.prod: listen on 127.0.0.1:`, `inherited socket "metrics" on 127.0.0.1:`},
		"too many sockets": {func(a *activation) {
			a.files, a.names = append(a.files, a.files[0]), append(a.names, "prod")
		}, `the sockets systemd handed over: LISTEN_FDS=4`, "takes 3 sockets at most"},
		"named for another listener": {func(a *activation) { a.names[0], a.names[1] = "stage", "prod" }, " but the inherited socket ", "make them the same"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := newActivation(t, t.TempDir(), slots)
			c.change(a)
			p := a.start(t)
			if code := p.Wait(t, 30*time.Second); code != 1 {
				t.Fatalf("exit %d, want 1", code)
			}
			out := strings.TrimSpace(p.Output())
			if !strings.Contains(out, c.want) || !strings.Contains(out, c.also) || strings.Count(out, "\n") != 0 {
				t.Fatalf("output %q, want one line with %q and %q", out, c.want, c.also)
			}
		})
	}
}

// TestSocketActivationKill9Managed: as TestSocketActivationKill9, with the
// instances run: slots that vipswap starts itself. The killed vipswap's
// instances outlive it; the next one stops what the previous run left
// (its ledger), starts them again, and serves the stored active slot:
// requests that come meanwhile wait (in the backlog, then up to
// proxy.hold for a healthy instance) and succeed.
func TestSocketActivationKill9Managed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := vstest.Binary(t)
	var slots strings.Builder
	slots.WriteString("slots:\n")
	for _, slot := range []string{"blue", "green"} {
		// Each instance writes down the environment it was given.
		fmt.Fprintf(&slots, "  %s:\n    run:\n      command: [sh, -c, \"env > %s/env-$$; exec %s app --slot %s --listen 127.0.0.1:{port}\"]\n      address: \"127.0.0.1:{port}\"\n      replicas: 2\n",
			slot, dir, bin, slot)
	}
	switchtest.ReclaimAfter(t, dir)
	a := newActivation(t, dir, slots.String())
	first := a.start(t)
	a.waitReady(t)
	sw := switchtest.Attach(t, first)
	sw.WaitHealthy(t)
	if _, err := sw.Client.Swap(context.Background(), wire.ChangeRequest{}); err != nil {
		t.Fatal(err)
	}

	const clients = 8
	load := startConnLoad(sw.Prod+"/api/test", clients, 60*time.Second)
	defer load.stop()
	waitOKs(t, load, 200)
	first.Signal(t, syscall.SIGKILL)
	first.Wait(t, 10*time.Second)
	killed := time.Now()
	before := load.oks()
	second := a.start(t)
	a.waitReady(t)
	down := time.Since(killed)
	again := switchtest.Attach(t, second)
	waitOKs(t, load, before+200)
	load.stop()
	again.WaitHealthy(t)
	envs, _ := filepath.Glob(filepath.Join(dir, "env-*"))
	if len(envs) < 8 {
		t.Fatalf("%d instances wrote their environment, want 8 (4 per run)", len(envs))
	}
	for _, path := range envs {
		env, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET="} {
			if strings.Contains("\n"+string(env), "\n"+name) {
				t.Fatalf("a run: instance was given %s...: systemd's variables are vipswap's only", name)
			}
		}
	}
	if active := again.Active(t); active != "green" {
		t.Fatalf("active %s after the restart, want green (the stored state)", active)
	}
	m := regexpStartToReady.FindStringSubmatch(metricsText(t, again.Admin))
	if m == nil {
		t.Fatal("no vipswap_start_to_ready_seconds in /metrics")
	}
	t.Logf("kill -9 under load (%d clients, a new connection per request) with managed instances, started again at once, ready %s after the kill: %d answered, %d refused, %d failed (in flight on the killed process), longest wait %s; start to ready %ss; failures: %v",
		clients, down.Round(time.Millisecond), load.ok, load.refused, load.failed, load.longest.Round(time.Millisecond), m[1], load.errs)
	if load.refused != 0 {
		t.Fatalf("%d connections refused, want 0", load.refused)
	}
	if load.failed > clients {
		t.Fatalf("%d requests failed, more than the %d that can be in flight at the kill: %v", load.failed, clients, load.errs)
	}
}

// TestSocketActivationRestart: "systemctl restart" with the socket unit:
// SIGTERM under load, and a new vipswap once the old one has exited, on
// the same sockets. The old one finishes what it accepted; connections
// made meanwhile, and those still queued when it stopped accepting, wait
// in the backlog for the new one: 0 refused, 0 failed.
func TestSocketActivationRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	a := newActivation(t, dir, staticSlots(addrs))
	first := a.start(t)
	a.waitReady(t)
	sw := switchtest.Attach(t, first)
	sw.WaitHealthy(t)

	const clients = 8
	load := startConnLoad(sw.Prod+"/api/test", clients, 60*time.Second)
	defer load.stop()
	waitOKs(t, load, 200)
	stopping := time.Now()
	first.Signal(t, syscall.SIGTERM)
	first.Wait(t, 60*time.Second)
	before := load.oks()
	second := a.start(t)
	a.waitReady(t)
	down := time.Since(stopping)
	switchtest.Attach(t, second)
	waitOKs(t, load, before+200)
	load.stop()
	t.Logf("SIGTERM under load (%d clients, a new connection per request), a new vipswap once it exited, ready %s after the signal: %d answered, %d refused, %d failed, longest wait %s; failures: %v",
		clients, down.Round(time.Millisecond), load.ok, load.refused, load.failed, load.longest.Round(time.Millisecond), load.errs)
	if load.refused+load.failed != 0 {
		t.Fatalf("%d refused and %d failed, want 0", load.refused, load.failed)
	}
}

// TestSocketActivationTLS: TLS and the PROXY protocol apply to an
// inherited socket as to one vipswap binds: prod, inherited, requires a
// PROXY header and serves HTTPS behind it.
func TestSocketActivationTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "127.0.0.1")
	_, addrs := startStatic(t, 1)
	a := newActivation(t, dir, staticSlots(addrs))
	prod := a.fileAddr(t, 0)
	cfg, err := os.ReadFile(a.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := strings.Replace(string(cfg), "prod: "+prod+"\n",
		"prod:\n    addr: "+prod+"\n    proxy_protocol: require\n    tls: {certs: [{cert: 127.0.0.1.crt, key: 127.0.0.1.key}]}\n", 1)
	if tlsCfg == string(cfg) {
		t.Fatalf("no prod listener to change in %s", cfg)
	}
	if err := os.WriteFile(a.cfgPath, []byte(tlsCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := a.start(t)
	a.waitReady(t)
	switchtest.Attach(t, p).WaitHealthy(t)

	pool := cert.Pool()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_, err = io.WriteString(c, "PROXY TCP4 192.0.2.7 127.0.0.1 40000 443\r\n")
			}
			return c, err
		},
	}}
	resp, err := hc.Get("https://" + prod + "/api/test")
	if err != nil {
		t.Fatalf("HTTPS behind a PROXY header on the inherited socket: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("HTTPS on the inherited socket: %d %s (TLS %v)", resp.StatusCode, body, resp.TLS != nil)
	}
	// Without the header it requires, the connection is refused.
	plain := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := plain.Get("https://" + prod + "/api/test"); err == nil {
		resp.Body.Close()
		t.Fatalf("no PROXY header on a listener that requires one: %d, want the connection refused", resp.StatusCode)
	}
}
