// Package launch runs a slot's instances as local child processes: it gives
// each a free port, restarts one that dies (with backoff), prefixes its output
// with the slot and port, and stops them gracefully (SIGTERM, then SIGKILL
// after a limit).
package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes one slot's processes.
type Spec struct {
	// Slot names the slot, for log prefixes.
	Slot string
	// Command is the program and arguments; {port} is replaced by each
	// replica's port. A bare "vipswap" as the program means the running
	// binary.
	Command []string
	// Replicas is how many processes to run. Zero means 1.
	Replicas int
	// StopTimeout is how long a process gets between SIGTERM and SIGKILL.
	// Zero means 10s.
	StopTimeout time.Duration
	// Output receives the processes' stdout and stderr, line by line, each
	// line prefixed with "slot port | ". Nil means os.Stderr.
	Output io.Writer
	// Logger reports starts, exits and restarts. Nil means slog.Default().
	Logger *slog.Logger
}

// Group is the running processes of one Spec.
type Group struct {
	spec   Spec
	procs  []*process
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type process struct {
	addr string
	args []string
	out  io.Writer
}

// Start allocates a port per replica and starts the processes. It returns
// once each has been started; whether they serve is for health checks to say.
func Start(spec Spec) (*Group, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("launch: empty command")
	}
	if spec.Replicas <= 0 {
		spec.Replicas = 1
	}
	if spec.StopTimeout <= 0 {
		spec.StopTimeout = 10 * time.Second
	}
	if spec.Output == nil {
		spec.Output = os.Stderr
	}
	if spec.Logger == nil {
		spec.Logger = slog.Default()
	}
	prog := spec.Command[0]
	if prog == "vipswap" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("launch: find the running binary: %w", err)
		}
		prog = self
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Group{spec: spec, cancel: cancel}
	out := &lockedWriter{w: spec.Output}
	for range spec.Replicas {
		port, err := freePort()
		if err != nil {
			cancel()
			return nil, fmt.Errorf("launch slot %s: %w", spec.Slot, err)
		}
		args := make([]string, len(spec.Command))
		args[0] = prog
		addr := ""
		for i, a := range spec.Command[1:] {
			args[i+1] = strings.ReplaceAll(a, "{port}", strconv.Itoa(port))
			if addr == "" && strings.Contains(a, "{port}") {
				if _, _, err := net.SplitHostPort(args[i+1]); err == nil {
					addr = args[i+1]
				}
			}
		}
		if addr == "" {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		p := &process{addr: addr, args: args, out: &prefixWriter{w: out, prefix: spec.Slot + " " + addr + " | "}}
		g.procs = append(g.procs, p)
	}
	for _, p := range g.procs {
		g.wg.Go(func() { g.supervise(ctx, p) })
	}
	return g, nil
}

// Addrs returns the host:port of every replica, in order.
func (g *Group) Addrs() []string {
	addrs := make([]string, len(g.procs))
	for i, p := range g.procs {
		addrs[i] = p.addr
	}
	return addrs
}

// Close stops every process (SIGTERM, then SIGKILL after StopTimeout) and
// waits for them to exit. It does not restart them.
func (g *Group) Close() {
	g.cancel()
	g.wg.Wait()
}

// supervise runs p until ctx ends, restarting it with backoff when it exits.
func (g *Group) supervise(ctx context.Context, p *process) {
	log := g.spec.Logger.With("slot", g.spec.Slot, "instance", p.addr)
	backoff := 100 * time.Millisecond
	for {
		started := time.Now()
		err := g.run(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		log.Warn("instance exited; restarting", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// run starts p once and waits for it to exit; when ctx ends it stops p.
func (g *Group) run(ctx context.Context, p *process) error {
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
	}
	cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(g.spec.StopTimeout)
	defer t.Stop()
	select {
	case err := <-exited:
		return err
	case <-t.C:
		g.spec.Logger.Warn("instance did not stop in time; killing it", "slot", g.spec.Slot, "instance", p.addr, "after", g.spec.StopTimeout)
		cmd.Process.Kill()
		return <-exited
	}
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// lockedWriter serialises whole lines from several processes.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// prefixWriter writes each complete line with a prefix, keeping a partial
// last line until its newline arrives.
type prefixWriter struct {
	w       io.Writer
	prefix  string
	pending []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	p.pending = append(p.pending, b...)
	for {
		i := bytes.IndexByte(p.pending, '\n')
		if i < 0 {
			break
		}
		line := append([]byte(p.prefix), p.pending[:i+1]...)
		if _, err := p.w.Write(line); err != nil {
			return n, err
		}
		p.pending = p.pending[i+1:]
	}
	return n, nil
}
