package vstest

import (
	"bytes"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child process whose combined output is kept, and shown in the
// test log when the test fails.
type Process struct {
	cmd    *exec.Cmd
	out    *output
	exited chan struct{}
	err    error // set before exited is closed
}

// Start runs bin with args; cleanup kills it (if still running) and waits.
func Start(t testing.TB, bin string, args ...string) *Process {
	t.Helper()
	return StartCmd(t, exec.Command(bin, args...))
}

// StartCmd is Start for a command the caller set up (its environment,
// descriptors to pass on); its output goes to the Process.
func StartCmd(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{cmd: cmd, out: &output{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("output of %v:\n%s", p.cmd.Args, p.out.String())
		}
	})
	return p
}

// WaitLine waits until a line of output matches re and returns its submatches.
func (p *Process) WaitLine(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	timeout = patient(timeout)
	deadline := time.After(timeout)
	for {
		// Take the channel before reading: a write between the read and
		// the wait would otherwise go unnoticed until the next one.
		changed := p.out.changed()
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m
		}
		select {
		case <-changed:
		case <-p.exited:
			if m := re.FindStringSubmatch(p.out.String()); m != nil {
				return m
			}
			t.Fatalf("%v exited (%v) before printing a line matching %s:\n%s", p.cmd.Args, p.err, re, p.out.String())
		case <-deadline:
			t.Fatalf("no line matching %s within %s:\n%s", re, timeout, p.out.String())
		}
	}
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit code.
func (p *Process) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	timeout = patient(timeout)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("%v did not exit within %s:\n%s", p.cmd.Args, timeout, p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// Output returns everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// output is a buffer that signals each write.
type output struct {
	mu     sync.Mutex // guards b and notify
	b      bytes.Buffer
	notify chan struct{}
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.notify != nil {
		close(o.notify)
		o.notify = nil
	}
	return o.b.Write(b)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// changed returns a channel closed by the next write.
func (o *output) changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.notify == nil {
		o.notify = make(chan struct{})
	}
	return o.notify
}
