package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// upgradeSwitch is a "vipswap serve" that upgrades: its processes (each
// upgrade's new one is the old one's child) share a process group, which
// cleanup kills, and write their log to one file, not a pipe a test
// process would wait on.
type upgradeSwitch struct {
	*switchtest.Switch
	dir, log, pidFile string
	first             *exec.Cmd
	firstExited       chan struct{}
}

var adminListeningRE = regexp.MustCompile(`msg=listening listener=admin addr=(\S+)`)

// serveUpgradable starts bin serve on config with a PID file, in its own
// process group, and waits until it listens.
func serveUpgradable(t *testing.T, bin, dir, config string, extra ...string) *upgradeSwitch {
	t.Helper()
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	u := &upgradeSwitch{dir: dir, log: filepath.Join(dir, "vipswap.log"), pidFile: filepath.Join(dir, "vipswap.pid"), firstExited: make(chan struct{})}
	logf, err := os.Create(u.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	u.first = exec.Command(bin, append([]string{"serve", "-c", path, "--pid-file", u.pidFile}, extra...)...)
	u.first.Stdout, u.first.Stderr = logf, logf
	u.first.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := u.first.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { u.first.Wait(); close(u.firstExited) }()
	pgid := u.first.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-u.firstExited
		if t.Failed() {
			out, _ := os.ReadFile(u.log)
			t.Logf("vipswap's log:\n%s", out)
		}
	})
	var admin string
	vstest.WaitFor(t, 30*time.Second, func() error {
		out, _ := os.ReadFile(u.log)
		m := adminListeningRE.FindSubmatch(out)
		if m == nil {
			return errors.New("not listening yet")
		}
		admin = string(m[1])
		return nil
	})
	sw := &switchtest.Switch{Admin: "http://" + admin, Client: client.New("http://" + admin)}
	st, err := sw.Client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Listeners {
		switch l.Name {
		case "prod":
			sw.Prod = "http://" + l.Addr
		case "stage":
			sw.Stage = "http://" + l.Addr
		}
	}
	u.Switch = sw
	return u
}

// pid returns the PID in the PID file: the process that serves.
func (u *upgradeSwitch) pid(t *testing.T) int {
	t.Helper()
	var pid int
	vstest.WaitFor(t, 30*time.Second, func() error {
		raw, err := os.ReadFile(u.pidFile)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
		return err
	})
	return pid
}

// waitGone waits until process pid has exited (gone, or a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	vstest.WaitFor(t, 60*time.Second, func() error {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		// pid (comm) S ...: the state follows the last ')'.
		if i := strings.LastIndexByte(string(raw), ')'); i >= 0 && i+2 < len(raw) && raw[i+2] == 'Z' {
			return nil
		}
		return fmt.Errorf("process %d still runs", pid)
	})
}

// upgradeCLI runs bin upgrade against the switch and returns its output
// and exit code.
func (u *upgradeSwitch) upgradeCLI(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"upgrade", "--admin", strings.TrimPrefix(u.Admin, "http://")}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// freshLoad sends GETs from clients goroutines, each on a new connection,
// until stopped, counting answers and failures (refused connections
// among them).
type freshLoad struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	ok, bad atomic.Int64
	mu      sync.Mutex
	errs    []string
}

func startFreshLoad(url string, clients int, limit time.Duration) *freshLoad {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	l := &freshLoad{cancel: cancel}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	for range clients {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := hc.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					if ctx.Err() == nil {
						l.bad.Add(1)
						l.mu.Lock()
						if len(l.errs) < 10 {
							l.errs = append(l.errs, err.Error())
						}
						l.mu.Unlock()
					}
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

func (l *freshLoad) stop() (ok, failed int64, errs []string) {
	l.cancel()
	l.wg.Wait()
	return l.ok.Load(), l.bad.Load(), l.errs
}

// upgradeFigures returns the proof's numbers: upgrades, keep-alive
// clients, new-connection clients. VIPSWAP_UPGRADE_PROOF=1 asks for the
// full proof (10 upgrades, 200 + 20 clients); by default fewer, for a
// shared machine.
func upgradeFigures() (upgrades, keepAlive, fresh int) {
	if os.Getenv("VIPSWAP_UPGRADE_PROOF") != "" {
		return 10, 200, 20
	}
	return 4, 20, 4
}

// TestUpgradeUnderLoad: upgrades in a row, alternating two builds with
// different versions, under keep-alive clients and clients that open a
// connection per request: every request answered 200, no connection
// refused, each upgrade reports the version it went to, each new process
// replaces the old one (which exits), and the state goes on (a swap after
// the last upgrade works).
func TestUpgradeUnderLoad(t *testing.T) {
	upgrades, keepAlive, fresh := upgradeFigures()
	dir := t.TempDir()
	bins := []string{vstest.BinaryVersion(t, dir, "upgrade-a"), vstest.BinaryVersion(t, dir, "upgrade-b")}
	_, addrs := startStatic(t, 1)
	u := serveUpgradable(t, bins[0], dir, testConfig(dir, staticSlots(addrs)))
	u.WaitHealthy(t)

	load := vstest.StartLoad(u.Prod+"/api/test", keepAlive, 5*time.Minute)
	fl := startFreshLoad(u.Prod+"/api/test", fresh, 5*time.Minute)
	waitOK := func(n int64) {
		vstest.WaitFor(t, 30*time.Second, func() error {
			if load.OK() < n || fl.ok.Load() < n/10 {
				return fmt.Errorf("%d keep-alive and %d fresh answers so far", load.OK(), fl.ok.Load())
			}
			return nil
		})
	}
	waitOK(200)
	started := time.Now()
	for i := range upgrades {
		old := u.pid(t)
		to := bins[(i+1)%2]
		want := []string{"upgrade-a", "upgrade-b"}[(i+1)%2]
		out, code := u.upgradeCLI(t, bins[0], "--binary", to, "--reason", fmt.Sprintf("upgrade %d", i+1))
		if code != 0 || !strings.Contains(out, "to "+want+" ") {
			t.Fatalf("upgrade %d: exit %d:\n%s", i+1, code, out)
		}
		waitGone(t, old)
		if now := u.pid(t); now == old {
			t.Fatalf("upgrade %d: the PID file still names %d", i+1, old)
		}
		// Both kinds of clients get answers from the new process.
		waitOK(load.OK() + 100)
	}
	took := time.Since(started)
	res := load.Stop()
	fok, ffailed, ferrs := fl.stop()
	t.Logf("%d upgrades in %s: keep-alive clients %d: %d answered, %d failed; new-connection clients %d: %d answered, %d failed (refused included)",
		upgrades, took.Round(time.Millisecond), keepAlive, res.OK, res.Failed, fresh, fok, ffailed)
	if res.Failed != 0 || ffailed != 0 {
		t.Fatalf("failed requests across the upgrades: keep-alive %d %v, new-connection %d %v", res.Failed, res.Errors, ffailed, ferrs)
	}
	// The last process has the state file: a swap is recorded.
	if _, err := u.Client.Swap(context.Background(), swapRequest("after the upgrades")); err != nil {
		t.Fatalf("swap after the upgrades: %v", err)
	}
	// Every upgrade is in the history, with its versions and, once the old
	// process exited, what both served and failed across it.
	vstest.WaitFor(t, 30*time.Second, func() error {
		h, err := u.Client.History(context.Background(), 0)
		if err != nil {
			return err
		}
		var ups []wire.HistoryEntry
		for _, e := range h {
			if e.Operation == "upgrade" {
				ups = append(ups, e)
			}
		}
		if len(ups) != upgrades {
			return fmt.Errorf("%d upgrade entries, want %d", len(ups), upgrades)
		}
		for _, e := range ups { // newest first
			if e.Measurement == nil {
				return fmt.Errorf("entry %d has no measurement yet", e.ID)
			}
		}
		var served uint64
		for i, e := range ups {
			n := upgrades - i
			from, to := []string{"upgrade-a", "upgrade-b"}[(n-1)%2], []string{"upgrade-a", "upgrade-b"}[n%2]
			if e.Result != "applied" || e.Reason != fmt.Sprintf("upgrade %d", n) || len(e.Changes) == 0 ||
				e.Changes[0] != "vipswap "+from+" -> "+to || !e.Measurement.Complete || e.Measurement.Failed != 0 || e.Measurement.Served == 0 {
				return fmt.Errorf("upgrade %d's entry: %+v, measurement %+v", n, e, *e.Measurement)
			}
			served += e.Measurement.Served
			t.Logf("history entry %d: %s; served %d, failed %d, old process drained in %.3fs", e.ID, strings.Join(e.Changes, "; "),
				e.Measurement.Served, e.Measurement.Failed, e.Measurement.DrainedSeconds)
		}
		return nil
	})
}

// TestUpgradeToABrokenBinary: a binary that exits at once, and one that
// never becomes ready, leave the old process serving under load (no
// failed request), the command exits 1 naming why, and the old process
// still changes the state afterwards (it took the state file back).
func TestUpgradeToABrokenBinary(t *testing.T) {
	dir := t.TempDir()
	bin := vstest.Binary(t)
	_, addrs := startStatic(t, 1)
	u := serveUpgradable(t, bin, dir, testConfig(dir, staticSlots(addrs)), "--upgrade-timeout", "3s")
	u.WaitHealthy(t)
	pid := u.pid(t)
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		// It says its version and passes the configuration check, as a
		// vipswap does, and then fails to serve.
		s := "#!/bin/sh\nif [ \"$1\" = version ]; then echo \"vipswap " + name + "\"; exit 0; fi\nif [ \"$1\" = check ]; then exit 0; fi\n" + body + "\n"
		if err := os.WriteFile(p, []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exits := script("exits", "echo 'cannot start' >&2; exit 3")
	hangs := script("hangs", "exec sleep 120")
	notVipswap := filepath.Join(dir, "false")
	if err := os.WriteFile(notVipswap, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	worldWritable := script("open", "exit 0")
	if err := os.Chmod(worldWritable, 0o777); err != nil {
		t.Fatal(err)
	}

	// A dry run checks the binary and changes nothing.
	if out, code := u.upgradeCLI(t, bin, "--dry-run"); code != 0 || !strings.Contains(out, "dry run: would upgrade from") {
		t.Fatalf("dry run: exit %d:\n%s", code, out)
	}
	if got := u.pid(t); got != pid {
		t.Fatalf("after a dry run the PID file names %d, not %d", got, pid)
	}
	load := vstest.StartLoad(u.Prod+"/api/test", 8, 3*time.Minute)
	fl := startFreshLoad(u.Prod+"/api/test", 2, 3*time.Minute)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--binary", exits}, "exited"},
		{[]string{"--binary", hangs}, "not ready within 3s"},
		{[]string{"--binary", notVipswap}, "version"},
		{[]string{"--binary", "relative/vipswap"}, "not an absolute path"},
		{[]string{"--binary", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"--binary", dir}, "not an executable file"},
		{[]string{"--binary", worldWritable}, "writable by other users"},
		{[]string{"--binary", strings.Repeat("/x", 3000)}, "not a file name"},
	}
	for _, c := range cases {
		before := load.OK()
		out, code := u.upgradeCLI(t, bin, c.args...)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("upgrade %v: exit %d, want 1 naming %q:\n%s", c.args, code, c.want, out)
		}
		if got := u.pid(t); got != pid {
			t.Fatalf("upgrade %v: the PID file names %d, not the old process %d", c.args, got, pid)
		}
		vstest.WaitFor(t, 30*time.Second, func() error {
			if load.OK() < before+50 {
				return errors.New("the old process answers no more requests")
			}
			return nil
		})
	}
	// The configuration file edited since the start into one the new
	// process would refuse: the command names the file's fault, and the
	// old process goes on (nothing was started).
	cfgPath := filepath.Join(dir, "vipswap.yaml")
	good, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, append(append([]byte{}, good...), "bogus: [\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--dry-run"}} {
		out, code := u.upgradeCLI(t, bin, args...)
		if code != 1 || !strings.Contains(out, "refuses the configuration file") || !strings.Contains(out, "vipswap.yaml: line") {
			t.Errorf("upgrade %v with an invalid configuration file: exit %d, want 1 naming the file's fault:\n%s", args, code, out)
		}
		if got := u.pid(t); got != pid {
			t.Fatalf("upgrade with an invalid configuration file: the PID file names %d, not the old process %d", got, pid)
		}
	}
	if err := os.WriteFile(cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	res := load.Stop()
	fok, ffailed, ferrs := fl.stop()
	t.Logf("keep-alive: %d answered, %d failed; new-connection: %d answered, %d failed", res.OK, res.Failed, fok, ffailed)
	if res.Failed != 0 || ffailed != 0 {
		t.Fatalf("failed requests: keep-alive %d %v, new-connection %d %v", res.Failed, res.Errors, ffailed, ferrs)
	}
	if _, err := u.Client.Swap(context.Background(), swapRequest("after the failed upgrades")); err != nil {
		t.Fatalf("swap after the failed upgrades (the state file taken back?): %v", err)
	}
	// The two that started a process are in the history as failed, with why.
	h, err := u.Client.History(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, e := range h {
		if e.Operation == "upgrade" {
			if e.Result != "failed" {
				t.Errorf("upgrade entry %d: result %q", e.ID, e.Result)
			}
			// No process took over: the entry must not say one did.
			if len(e.Changes) != 3 || !strings.HasPrefix(e.Changes[2], fmt.Sprintf("process %d goes on serving", pid)) {
				t.Errorf("failed upgrade entry %d: changes %q, want the old process %d going on", e.ID, e.Changes, pid)
			}
			failed = append(failed, e.Error)
		}
	}
	if len(failed) != 2 || !strings.Contains(failed[0], "not ready") || !strings.Contains(failed[1], "exited") {
		t.Errorf("failed upgrades in the history: %q", failed)
	}
	select {
	case <-u.firstExited:
		t.Fatal("the old process exited")
	default:
	}
}

// swapRequest is a forced swap with reason.
func swapRequest(reason string) wire.ChangeRequest {
	return wire.ChangeRequest{Reason: reason, Force: true}
}
