package launch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vipswap/vipswap/internal/vstest"
)

// TestMain re-executes the test binary as an instance, or as a stand-in
// for vipswap that supervises instances until it is killed, when asked to.
func TestMain(m *testing.M) {
	if cmd := os.Getenv("LAUNCH_TEST_SUPERVISE"); cmd != "" {
		runSupervisor(cmd)
		return
	}
	if addr := os.Getenv("LAUNCH_TEST_INSTANCE"); addr != "" {
		runInstance(os.ExpandEnv(addr))
		return
	}
	goleak.VerifyTestMain(m)
}

// runInstance serves /exit (exit 1) and / on addr; it ignores SIGTERM when
// LAUNCH_TEST_STUBBORN is set.
func runInstance(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	if os.Getenv("LAUNCH_TEST_STUBBORN") != "" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		go func() { <-sig; fmt.Println("got SIGTERM"); os.Exit(0) }()
	}
	fmt.Println("instance up on", addr, "pid", os.Getpid())
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/exit" {
			os.Exit(1)
		}
		io.WriteString(w, "up")
	}))
}

// runSupervisor starts one instance running the JSON command, with a ledger
// at $LAUNCH_TEST_LEDGER, prints its address and waits to be killed.
func runSupervisor(command string) {
	os.Unsetenv("LAUNCH_TEST_SUPERVISE") // the instances are not supervisors
	var args []string
	json.Unmarshal([]byte(command), &args)
	ledger, _ := OpenLedger(os.Getenv("LAUNCH_TEST_LEDGER"), nil)
	g, err := Start(Spec{Slot: "green", Command: args, StopTimeout: 300 * time.Millisecond, Output: os.Stdout, Ledger: ledger})
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	fmt.Println("supervising", g.Addrs()[0])
	select {}
}

var (
	bin     = os.Args[0]
	pidRE   = regexp.MustCompile(`instance up on \S+ pid (\d+)`)
	quiet   = slog.New(slog.NewTextHandler(io.Discard, nil))
	instRun = "-test.run=^$"
)

func startSpec(t *testing.T, spec Spec) (*Group, *vstest.Buffer) {
	t.Helper()
	out := &vstest.Buffer{}
	spec.Slot, spec.Output, spec.Logger = "green", out, quiet
	if spec.StopTimeout == 0 {
		spec.StopTimeout = 300 * time.Millisecond
	}
	g, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, out
}

func start(t *testing.T, replicas int, stubborn bool) (*Group, *vstest.Buffer) {
	t.Helper()
	t.Setenv("LAUNCH_TEST_INSTANCE", "127.0.0.1:{port}")
	if stubborn {
		t.Setenv("LAUNCH_TEST_STUBBORN", "1")
	}
	// The environment carries the address; {port} is expanded in it by a
	// small shell so the command line has the placeholder as a real caller's
	// would.
	return startSpec(t, Spec{
		Command:  []string{"/bin/sh", "-c", `LAUNCH_TEST_INSTANCE=127.0.0.1:$0 exec "$1" -test.run=^$`, "{port}", bin},
		Replicas: replicas,
	})
}

func waitUp(t *testing.T, addr string, up bool) {
	t.Helper()
	vstest.WaitFor(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		if (err == nil) != up {
			return fmt.Errorf("%s: want up=%v (last error %v)", addr, up, err)
		}
		return nil
	})
}

// pids returns the PIDs the instances printed, oldest first.
func pids(out string) []int {
	var ps []int
	for _, m := range pidRE.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		ps = append(ps, n)
	}
	return ps
}

// gone reports whether pid no longer runs (a zombie waiting for init to
// reap it counts as gone).
func gone(pid int) bool {
	p, ok := readProc(pid)
	return !ok || p.state == 'Z' || p.state == 'X'
}

// closeWithin closes g and fails the test if that takes longer than limit.
func closeWithin(t *testing.T, g *Group, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { g.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("Close did not return within %s", limit)
	}
	return time.Since(start)
}

func TestStartRestartStop(t *testing.T) {
	g, out := start(t, 2, false)
	addrs := g.Addrs()
	if len(addrs) != 2 || addrs[0] == addrs[1] {
		t.Fatalf("addrs %v, want two distinct", addrs)
	}
	for _, a := range addrs {
		waitUp(t, a, true)
	}
	if !strings.Contains(out.String(), "green "+addrs[0]+" | instance up on "+addrs[0]) {
		t.Fatalf("output not prefixed with slot and address:\n%s", out)
	}

	// An instance that dies is started again on the same address.
	http.Get("http://" + addrs[0] + "/exit")
	// It may still answer for a moment before it exits: wait for the
	// second start, not merely for an answer.
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := strings.Count(out.String(), "instance up on "+addrs[0]); n < 2 {
			return fmt.Errorf("instance started %d times, want a restart:\n%s", n, out)
		}
		return nil
	})
	waitUp(t, addrs[0], true)

	g.Close()
	for _, a := range addrs {
		waitUp(t, a, false)
	}
	if n := strings.Count(out.String(), "got SIGTERM"); n != 2 {
		t.Fatalf("%d instances saw SIGTERM, want 2:\n%s", n, out)
	}
}

func TestStubbornInstanceIsKilled(t *testing.T) {
	g, _ := start(t, 1, true)
	waitUp(t, g.Addrs()[0], true)
	closeWithin(t, g, 10*time.Second)
	waitUp(t, g.Addrs()[0], false)
}

// TestAddress: {port} is replaced inside any argument (here in the middle
// of a shell script), the command has $PORT, and the address is
// run.address, never guessed from the arguments. Before, the instance
// was named after the whole shell string and probed nowhere.
func TestAddress(t *testing.T) {
	t.Run("port inside a shell script", func(t *testing.T) {
		g, _ := startSpec(t, Spec{Command: []string{"/bin/sh", "-c", "exec env LAUNCH_TEST_INSTANCE=127.0.0.1:{port} " + bin + " " + instRun}})
		addr := g.Addrs()[0]
		if !regexp.MustCompile(`^127\.0\.0\.1:\d+$`).MatchString(addr) {
			t.Fatalf("address %q, want 127.0.0.1:PORT", addr)
		}
		waitUp(t, addr, true)
	})
	t.Run("PORT in the environment, another host", func(t *testing.T) {
		t.Setenv("LAUNCH_TEST_INSTANCE", "localhost:$PORT")
		g, _ := startSpec(t, Spec{Command: []string{bin, instRun}, Address: "localhost:{port}"})
		addr := g.Addrs()[0]
		if !regexp.MustCompile(`^localhost:\d+$`).MatchString(addr) {
			t.Fatalf("address %q, want localhost:PORT", addr)
		}
		waitUp(t, addr, true)
	})
	t.Run("address without {port}", func(t *testing.T) {
		if _, err := Start(Spec{Command: []string{bin}, Address: "127.0.0.1:8080"}); err == nil || !strings.Contains(err.Error(), "want host:{port}") {
			t.Fatalf("got %v, want a refusal", err)
		}
	})
}

// shellWrapped is a run: command whose shell does not exec the instance,
// so the instance is the shell's child, not vipswap's.
func shellWrapped(extra string) []string {
	return []string{"/bin/sh", "-c", extra + `LAUNCH_TEST_INSTANCE=127.0.0.1:{port} "$0" -test.run='^$'; true`, bin}
}

// TestShellWrappedInstanceStops: with a shell between vipswap and the
// instance, Close still stops the instance (the whole process group gets
// the signal) and returns within the stop timeout, even when the instance
// ignores SIGTERM. Before, the shell died, the instance was orphaned still
// serving, and Close waited forever on the output pipe it held.
func TestShellWrappedInstanceStops(t *testing.T) {
	for _, stubborn := range []bool{false, true} {
		t.Run(fmt.Sprint("stubborn ", stubborn), func(t *testing.T) {
			extra := ""
			if stubborn {
				extra = "LAUNCH_TEST_STUBBORN=1 "
			}
			g, out := startSpec(t, Spec{Command: shellWrapped(extra), StopTimeout: 500 * time.Millisecond})
			addr := g.Addrs()[0]
			waitUp(t, addr, true)
			app := firstPid(t, out)
			p, _ := readProc(app)
			if p.pgid == app {
				t.Fatalf("the instance leads its own group: the shell exec'd it, so this tests nothing")
			}
			took := closeWithin(t, g, 10*time.Second)
			t.Logf("Close took %s with a 500ms stop timeout", took.Round(time.Millisecond))
			if !gone(app) || len(groupMembers(p.pgid)) != 0 {
				t.Fatalf("after Close: instance %d gone %v, its group %d still has %v", app, gone(app), p.pgid, groupMembers(p.pgid))
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Fatalf("%s still accepts connections", addr)
			}
			if got := strings.Contains(out.String(), "got SIGTERM"); got == stubborn {
				t.Errorf("instance saw SIGTERM: %v, want %v:\n%s", got, !stubborn, out)
			}
		})
	}
}

// TestOrphanIsStoppedBeforeRestart: when the shell dies and leaves the
// instance running, the instance's group is stopped before the restart, so
// the new instance gets the port. Before, the orphan kept it and every
// restart failed to listen.
func TestOrphanIsStoppedBeforeRestart(t *testing.T) {
	g, out := startSpec(t, Spec{Command: shellWrapped("")})
	addr := g.Addrs()[0]
	waitUp(t, addr, true)
	app := firstPid(t, out)
	p, _ := readProc(app)
	syscall.Kill(p.pgid, syscall.SIGKILL) // the shell alone
	vstest.WaitFor(t, 10*time.Second, func() error {
		if ps := pids(out.String()); len(ps) < 2 {
			return fmt.Errorf("no second instance yet:\n%s", out)
		}
		return nil
	})
	if !gone(app) {
		t.Fatalf("the orphaned instance %d still runs", app)
	}
	waitUp(t, addr, true)
	if strings.Contains(out.String(), "address already in use") {
		t.Fatalf("a restart met the orphan on its port:\n%s", out)
	}
}

// superviseProcess starts the test binary as a stand-in for vipswap that
// runs one instance of command with a ledger at ledger; it returns the
// stand-in and the instance's address.
func superviseProcess(t *testing.T, ledger string, command []string, stubborn bool) (*vstest.Process, string) {
	t.Helper()
	cmdJSON, _ := json.Marshal(command)
	t.Setenv("LAUNCH_TEST_SUPERVISE", string(cmdJSON))
	t.Setenv("LAUNCH_TEST_LEDGER", ledger)
	if stubborn {
		t.Setenv("LAUNCH_TEST_STUBBORN", "1")
	}
	// Registered before the stand-in starts, so it runs after the stand-in
	// is killed: whatever a failing test leaves is stopped as the next
	// vipswap would stop it.
	t.Cleanup(func() {
		if l, err := OpenLedger(ledger, quiet); err == nil {
			l.Reclaim(5 * time.Second)
		}
	})
	p := vstest.Start(t, bin, instRun)
	addr := p.WaitLine(t, regexp.MustCompile(`supervising (\S+)`), 10*time.Second)[1]
	p.WaitLine(t, regexp.MustCompile(`instance up on`), 10*time.Second)
	return p, addr
}

// TestKilledRunsInstancesAreReclaimed: the instances outlive a kill -9 of
// vipswap (no Pdeathsig: an upgrade hands them to the next process), and
// the next run's Reclaim stops them, even one that ignores SIGTERM.
func TestKilledRunsInstancesAreReclaimed(t *testing.T) {
	t.Setenv("LAUNCH_TEST_INSTANCE", "127.0.0.1:$PORT")
	ledger := t.TempDir() + "/ledger"
	sup, addr := superviseProcess(t, ledger, []string{bin, instRun}, true)
	waitUp(t, addr, true)
	vstest.WaitFor(t, 10*time.Second, func() error {
		if data, _ := os.ReadFile(ledger); !strings.Contains(string(data), addr) {
			return fmt.Errorf("the ledger does not list the instance yet: %s", data)
		}
		return nil
	})
	sup.Signal(t, syscall.SIGKILL)
	sup.Wait(t, 10*time.Second)
	waitUp(t, addr, true)
	l, err := OpenLedger(ledger, quiet)
	if err != nil {
		t.Fatal(err)
	}
	left, err := l.Reclaim(300 * time.Millisecond)
	if err != nil || len(left) != 1 || !left[0].Stopped {
		t.Fatalf("Reclaim: %+v, %v; want the instance stopped", left, err)
	}
	waitUp(t, addr, false)
}

// TestLedgerReclaimsLeftovers: kill -9 of vipswap with a shell-wrapped
// instance leaves the shell and the instance serving; the next run's
// Reclaim stops them, and only them.
func TestLedgerReclaimsLeftovers(t *testing.T) {
	ledger := t.TempDir() + "/state.db.instances"
	sup, addr := superviseProcess(t, ledger, shellWrapped(""), false)
	app := pids(sup.Output())[0]
	// The group is recorded just after it starts.
	vstest.WaitFor(t, 10*time.Second, func() error {
		var f ledgerFile
		data, _ := os.ReadFile(ledger)
		if json.Unmarshal(data, &f) != nil || len(f.Groups) != 1 {
			return fmt.Errorf("the ledger does not list the instance yet: %s", data)
		}
		return nil
	})
	sup.Signal(t, syscall.SIGKILL)
	sup.Wait(t, 10*time.Second)
	waitUp(t, addr, true) // the orphan serves on: this is what Reclaim is for

	l, err := OpenLedger(ledger, quiet)
	if err != nil {
		t.Fatal(err)
	}
	left, err := l.Reclaim(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The shell and the instance (no Pdeathsig kills the shell either).
	found := false
	for _, lo := range left {
		if !lo.Stopped || lo.Addr != addr || lo.Slot != "green" {
			t.Fatalf("leftover %+v not stopped", lo)
		}
		found = found || lo.PID == app
	}
	if len(left) != 2 || !found {
		t.Fatalf("leftovers %+v, want the shell and instance %d on %s stopped", left, app, addr)
	}
	if !gone(app) {
		t.Fatalf("leftover %d still runs", app)
	}
	waitUp(t, addr, false)
	var f ledgerFile
	data, _ := os.ReadFile(ledger)
	if err := json.Unmarshal(data, &f); err != nil || len(f.Groups) != 0 || f.Marker != l.id {
		t.Fatalf("ledger after Reclaim: %s (%v), want this run's, empty", data, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ledger); !os.IsNotExist(err) {
		t.Fatalf("ledger still there after Close: %v", err)
	}
}

// TestLedgerLeavesUnrelatedProcessesAlone: a ledger that names a process
// group now used by a process that is not a previous run's instance
// (another boot, or no marker in its environment) stops nothing.
func TestLedgerLeavesUnrelatedProcessesAlone(t *testing.T) {
	dir := t.TempDir()
	sleeper := exec.Command("sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // as a reused PGID would be
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pid := sleeper.Process.Pid
	for name, f := range map[string]ledgerFile{
		"no marker":    {Boot: bootID(), Marker: "0123456789abcdef01234567", Groups: []Record{{Slot: "blue", Addr: "127.0.0.1:1", PGID: pid}}},
		"another boot": {Boot: "not-this-boot", Marker: "x", Groups: []Record{{Slot: "blue", Addr: "127.0.0.1:1", PGID: pid}}},
	} {
		t.Run(name, func(t *testing.T) {
			path := dir + "/" + strings.ReplaceAll(name, " ", "-")
			if err := writeFile(path, f); err != nil {
				t.Fatal(err)
			}
			l, _ := OpenLedger(path, quiet)
			left, err := l.Reclaim(time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, lo := range left {
				if lo.Stopped {
					t.Fatalf("Reclaim stopped %+v", lo)
				}
			}
			if gone(pid) {
				t.Fatal("Reclaim killed an unrelated process")
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		path := dir + "/garbage"
		os.WriteFile(path, []byte("{not json"), 0o600)
		l, _ := OpenLedger(path, quiet)
		if _, err := l.Reclaim(time.Second); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("got %v, want an error naming %s", err, path)
		}
	})
}

// firstPid waits until the instance has printed its pid (it may listen
// before its output reaches out) and returns it.
func firstPid(t *testing.T, out fmt.Stringer) int {
	t.Helper()
	vstest.WaitFor(t, 10*time.Second, func() error {
		if len(pids(out.String())) == 0 {
			return fmt.Errorf("no pid printed yet:\n%s", out)
		}
		return nil
	})
	return pids(out.String())[0]
}

// A replaced replica gets SIGTERM and its new command starts on the same
// port, with {version} expanded; the other replica is left alone; a
// restart after the new command exits runs the new command again.
func TestReplace(t *testing.T) {
	t.Setenv("LAUNCH_TEST_INSTANCE", "127.0.0.1:{port}")
	cmd := func(v string) []string {
		return []string{"/bin/sh", "-c", `echo "version $1"; LAUNCH_TEST_INSTANCE=127.0.0.1:$0 exec "$2" -test.run=^$`, "{port}", v, bin}
	}
	g, out := startSpec(t, Spec{Command: cmd("{version}"), Version: "1.0", Replicas: 2})
	addrs := g.Addrs()
	for _, a := range addrs {
		waitUp(t, a, true)
	}
	if n := strings.Count(out.String(), "version 1.0"); n != 2 {
		t.Fatalf("{version} expanded %d times, want 2:\n%s", n, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Replace(ctx, addrs[0], cmd("{version}"), "2.0"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "got SIGTERM"); n != 1 {
		t.Fatalf("%d instances saw SIGTERM, want the replaced one:\n%s", n, out)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), "green "+addrs[0]+" | version 2.0") {
			return fmt.Errorf("new version not started on %s:\n%s", addrs[0], out)
		}
		return nil
	})
	waitUp(t, addrs[0], true)
	http.Get("http://" + addrs[0] + "/exit") // crashes: restarted with 2.0
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := strings.Count(out.String(), addrs[0]+" | version 2.0"); n < 2 {
			return fmt.Errorf("restart did not run the new command:\n%s", out)
		}
		return nil
	})
	if err := g.Replace(ctx, "127.0.0.1:1", cmd("x"), "x"); err == nil || !strings.Contains(err.Error(), "no instance 127.0.0.1:1") {
		t.Fatalf("replace of an unknown instance: %v", err)
	}
	if g.Restarts()[addrs[1]] != 0 || strings.Count(out.String(), addrs[1]+" | version") != 1 {
		t.Fatalf("the other replica was touched:\n%s", out)
	}
}

// A group's replicas get different ports, however quickly the kernel
// recycles a port just closed.
func TestFreePortsDiffer(t *testing.T) {
	for range 50 {
		ports, err := freePorts(8)
		if err != nil {
			t.Fatal(err)
		}
		releasePorts(ports)
		seen := map[int]bool{}
		for _, p := range ports {
			if seen[p] {
				t.Fatalf("port %d handed out twice in %v", p, ports)
			}
			seen[p] = true
		}
	}
}

// Ports picked for one group are not picked for another while the first
// owns them, however quickly the kernel recycles a port just closed; once
// given back they may be.
func TestFreePortsStayReserved(t *testing.T) {
	var held [][]int
	seen := map[int]bool{}
	for range 50 {
		ports, err := freePorts(4)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if seen[p] {
				t.Fatalf("port %d handed out again while reserved", p)
			}
			seen[p] = true
		}
		held = append(held, ports)
	}
	for _, ports := range held {
		releasePorts(ports)
	}
	reservedMu.Lock()
	defer reservedMu.Unlock()
	for p := range seen {
		if reserved[p] {
			t.Fatalf("port %d still reserved after release", p)
		}
	}
}
