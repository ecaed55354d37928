//go:build linux

package launch

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// dupHanded duplicates the output pipes of handed, as tableflip does for
// the new process.
func dupHanded(t *testing.T, handed []Handed) []Handed {
	t.Helper()
	out := make([]Handed, len(handed))
	for i, h := range handed {
		fd, err := syscall.Dup(int(h.Output.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		syscall.CloseOnExec(fd)
		out[i] = Handed{Record: h.Record, Output: os.NewFile(uintptr(fd), "output")}
	}
	return out
}

// handOverSpec is the spec of the instances these tests hand over.
func handOverSpec(t *testing.T, ledger *Ledger) Spec {
	t.Setenv("LAUNCH_TEST_INSTANCE", "127.0.0.1:{port}")
	return Spec{
		Command:  []string{"/bin/sh", "-c", `LAUNCH_TEST_INSTANCE=127.0.0.1:$0 exec "$1" -test.run=^$`, "{port}", bin},
		Replicas: 2, Ledger: ledger, Version: "1",
	}
}

// TestHandOver: a group held and released leaves its instances running;
// a group that adopts them (as the next vipswap process does) keeps their
// PIDs, reads their output from then on (the partial line the first one
// had read included), restarts one that crashes, and stops them on Close.
func TestHandOver(t *testing.T) {
	ledger, err := OpenLedger(t.TempDir()+"/state.instances", quiet)
	if err != nil {
		t.Fatal(err)
	}
	spec := handOverSpec(t, ledger)
	old, out := startSpec(t, spec)
	addrs := old.Addrs()
	for _, a := range addrs {
		waitUp(t, a, true)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := len(pids(out.String())); n != 2 {
			return fmt.Errorf("%d instances printed their PID", n)
		}
		return nil
	})
	before := pids(out.String())

	handed := old.Hold()
	if len(handed) != 2 {
		t.Fatalf("Hold handed %d instances, want 2", len(handed))
	}
	for _, h := range handed {
		if h.Marker != ledger.id || h.Port == 0 || h.Start == 0 || h.Version != "1" || len(h.Command) != len(spec.Command) {
			t.Fatalf("handed record %+v is incomplete", h.Record)
		}
	}
	next := dupHanded(t, handed)
	// A partial line the old group read is the new one's to complete.
	old.procs[0].out.pending = []byte("half a ")
	pending := old.Release()
	old.Close()
	for _, a := range addrs {
		waitUp(t, a, true) // released, not stopped
	}
	for _, pid := range before {
		if gone(pid) {
			t.Fatalf("instance %d stopped at the release", pid)
		}
	}

	out2 := &vstest.Buffer{}
	spec.Slot, spec.Output, spec.Logger, spec.StopTimeout = "green", out2, quiet, 2*time.Second
	g, err := Adopt(spec, next)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	if got := g.Addrs(); strings.Join(got, " ") != strings.Join(addrs, " ") {
		t.Fatalf("adopted addresses %v, want %v", got, addrs)
	}
	g.Own(pending)
	for i, p := range g.procs {
		if got := int(p.pgid.Load()); got != handed[i].PGID || (got != before[0] && got != before[1]) {
			t.Fatalf("replica %s runs group %d after the adoption, want %d (of %v)", p.addr, got, handed[i].PGID, before)
		}
	}
	// The new group reads the output: the instance's line after the
	// partial one, and a crash is restarted.
	http.Get("http://" + addrs[1] + "/exit")
	vstest.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(out2.String(), "green "+addrs[1]+" | instance up on "+addrs[1]) {
			return fmt.Errorf("the crashed adopted instance was not restarted:\n%s", out2)
		}
		return nil
	})
	waitUp(t, addrs[1], true)
	if g.Restarts()[addrs[1]] != 1 {
		t.Fatalf("restarts %v, want 1 for %s", g.Restarts(), addrs[1])
	}
	g.Close()
	for _, a := range addrs {
		waitUp(t, a, false)
	}
	if !gone(handed[0].PGID) {
		t.Fatalf("adopted instance %d survived Close", handed[0].PGID)
	}
	if !strings.Contains(out2.String(), "green "+addrs[0]+" | half a got SIGTERM") {
		t.Fatalf("the adopted instance's output (after the handed partial line) is not the new group's:\n%s", out2)
	}
}

// TestHoldResume: a crash while held is restarted only once resumed, and a
// Replace while held is refused; an Adopt of instances that are not the
// configuration's (another command) adopts nothing.
func TestHoldResume(t *testing.T) {
	ledger, err := OpenLedger(t.TempDir()+"/state.instances", quiet)
	if err != nil {
		t.Fatal(err)
	}
	spec := handOverSpec(t, ledger)
	g, out := startSpec(t, spec)
	addrs := g.Addrs()
	for _, a := range addrs {
		waitUp(t, a, true)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := len(pids(out.String())); n != 2 {
			return fmt.Errorf("%d instances printed their PID", n)
		}
		return nil
	})
	handed := g.Hold()

	other := spec
	other.Slot, other.Logger, other.Command = "green", quiet, []string{"/bin/true"}
	if _, err := Adopt(other, dupHanded(t, handed)); err == nil || !strings.Contains(err.Error(), "not the configuration's") {
		t.Fatalf("Adopt of another command: %v", err)
	}
	if err := g.Replace(t.Context(), addrs[0], spec.Command, "2"); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("Replace while held: %v", err)
	}
	first := pids(out.String())
	http.Get("http://" + addrs[0] + "/exit")
	waitUp(t, addrs[0], false)
	vstest.WaitFor(t, 10*time.Second, func() error {
		if g.Restarts()[addrs[0]] != 1 {
			return errors.New("the crash is not noticed yet")
		}
		return nil
	})
	if n := len(pids(out.String())); n != len(first) {
		t.Fatalf("an instance started while held:\n%s", out)
	}
	g.Resume()
	waitUp(t, addrs[0], true)
	waitUp(t, addrs[1], true)
}

// TestAdoptLeavesUnrelatedProcessesAlone: a handed record naming a process
// that is not the instance recorded (no marker, another start time) is
// not adopted, and neither Own, a crash nor Close signals it: the replica
// starts afresh instead.
func TestAdoptLeavesUnrelatedProcessesAlone(t *testing.T) {
	sleeper := exec.Command("sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pid := sleeper.Process.Pid
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	releasePorts(ports)
	spec := handOverSpec(t, nil)
	spec.Replicas, spec.Slot, spec.Logger, spec.StopTimeout = 1, "green", quiet, 300*time.Millisecond
	out := &vstest.Buffer{}
	spec.Output = out
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	for name, rec := range map[string]Record{
		"no marker":          {Start: startTime(pid), Marker: "0123456789abcdef01234567"},
		"another start time": {Start: startTime(pid) + 1, Marker: "x"},
		"no start time":      {Marker: "x"},
	} {
		t.Run(name, func(t *testing.T) {
			rec.Slot, rec.Addr, rec.PGID, rec.Port, rec.Command, rec.Version = "green", addr, pid, ports[0], spec.Command, spec.Version
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			g, err := Adopt(spec, []Handed{{Record: rec, Output: r}})
			if err != nil {
				t.Fatal(err)
			}
			g.Own(nil)
			waitUp(t, addr, true) // started afresh
			g.Close()
			if gone(pid) {
				t.Fatalf("the unrelated process %d was stopped", pid)
			}
		})
	}
}

// TestReclaimFile: the old process, after a failed upgrade, stops what the
// failed new process's ledger aside lists (instances it started), but not
// its own instances the failed process had listed as adopted; and removes
// the file.
func TestReclaimFile(t *testing.T) {
	dir := t.TempDir()
	oldLedger, err := OpenLedger(dir+"/state.instances", quiet)
	if err != nil {
		t.Fatal(err)
	}
	spec := handOverSpec(t, oldLedger)
	spec.Replicas = 1
	own, _ := startSpec(t, spec)
	waitUp(t, own.Addrs()[0], true)
	ownRec := own.Hold()[0].Record
	own.Resume()

	newLedger, err := OpenLedger(dir+"/state.instances", quiet)
	if err != nil {
		t.Fatal(err)
	}
	newLedger.WriteAside(dir + "/state.instances.next")
	spec.Ledger = newLedger
	started, _ := startSpec(t, spec)
	waitUp(t, started.Addrs()[0], true)
	startedRec := started.Hold()[0].Record // held: not restarted once stopped
	newLedger.add(ownRec)                  // adopted by the failed process
	newLedger.Release()                    // the failed process has exited: its ledger writes no more

	left, err := oldLedger.ReclaimFile(dir+"/state.instances.next", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].PGID != startedRec.PGID || !left[0].Stopped {
		t.Fatalf("ReclaimFile: %+v, want the failed process's instance %d stopped", left, startedRec.PGID)
	}
	waitUp(t, started.Addrs()[0], false)
	waitUp(t, own.Addrs()[0], true)
	if gone(ownRec.PGID) {
		t.Fatal("the old process's own instance was stopped")
	}
	if _, err := os.Stat(dir + "/state.instances.next"); !os.IsNotExist(err) {
		t.Fatalf("the file aside is still there: %v", err)
	}
}
