// Package launch runs a slot's instances as local child processes: it gives
// each a free port, restarts one that dies (with backoff), prefixes its output
// with the slot and address, and stops them gracefully (SIGTERM, then SIGKILL
// after a limit).
//
// An instance is a process group: the command and everything it starts
// (a shell that runs the application without exec, say) are signalled
// together, and an instance has stopped only when its whole group is gone.
// A Ledger records the groups so that the next run stops what a crashed
// one left behind. On Linux, an upgrade hands the running instances to
// the new vipswap process, which adopts them (Hold, Release, Adopt, Own):
// they keep their PIDs and their output goes on through the new process.
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
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultAddress is where an instance listens unless Spec.Address says
// otherwise.
const DefaultAddress = "127.0.0.1:{port}"

// Spec describes one slot's processes.
type Spec struct {
	// Slot names the slot, for log prefixes.
	Slot string
	// Command is the program and arguments; {port} is replaced by each
	// replica's port anywhere in any of them, and the process gets it as
	// $PORT too. A bare "vipswap" as the program means the running binary.
	Command []string
	// Address is the host:port an instance listens on, with {port} for its
	// port; vipswap probes and forwards to it. Empty means DefaultAddress.
	Address string
	// Replicas is how many processes to run. Zero means 1.
	Replicas int
	// StopTimeout is how long a process group gets between SIGTERM and
	// SIGKILL. Zero means 10s.
	StopTimeout time.Duration
	// Output receives the processes' stdout and stderr, line by line, each
	// line prefixed with "slot host:port | ". Nil means os.Stderr.
	Output io.Writer
	// Logger reports starts, exits and restarts. Nil means slog.Default().
	Logger *slog.Logger
	// Ledger, if set, records each running process group so that a later
	// run can stop the ones this run leaves behind if it is killed.
	Ledger *Ledger
	// Version replaces {version} in Command (a release's version label).
	Version string
}

// replacement asks a process's run to stop its command and start another
// in its place, on the same port.
type replacement struct {
	args, tmpl []string
	version    string
	done       chan error // the old command's exit, once it is gone
}

// errReplaced is run's answer when Replace stopped the command.
var errReplaced = errors.New("replaced")

// errHeld is run's answer when the group was held before the command
// started; errReleased when the group let the command go.
var (
	errHeld     = errors.New("held")
	errReleased = errors.New("released")
)

// Group is the running processes of one Spec.
type Group struct {
	spec    Spec
	procs   []*process
	spawner *spawner
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	releaseOnce sync.Once // gives back its ports (Close)

	// mu guards held and resumed; it is held across a command's start,
	// so that Hold returns with no start half done.
	mu      sync.Mutex
	held    bool          // no command starts (Hold; an adopted group until Own)
	resumed chan struct{} // closed when held ends
	// owned is closed when the processes are this group's to stop: at
	// once for Start, at Own for Adopt. Before, Close lets them be.
	owned       chan struct{}
	ownOnce     sync.Once
	released    chan struct{} // closed by Release: leave the processes to another
	releaseDone sync.Once
}

type process struct {
	addr     string
	port     int
	out      *prefixWriter    // used by one copy at a time
	replace  chan replacement // Replace's requests, for run
	mu       sync.Mutex       // guards args, tmpl, version, cur
	args     []string
	tmpl     []string      // args before expansion, as the configuration says them
	version  string        // what {version} was replaced with
	cur      *running      // the command running now, nil when none
	adopted  *adoptee      // a process handed over, watched before anything is started
	pgid     atomic.Int64  // the running process group; 0 when none
	restarts atomic.Uint64 // times it exited and was started again
}

// running is a command that runs: its record and the read end of its
// output pipe.
type running struct {
	rec Record
	r   *os.File
}

// Start allocates a port per replica and starts the processes. It returns
// once each has been started; whether they serve is for health checks to say.
func Start(spec Spec) (*Group, error) {
	if supported != nil {
		return nil, fmt.Errorf("launch slot %s: %w", spec.Slot, supported)
	}
	spec, prog, err := defaults(spec)
	if err != nil {
		return nil, err
	}
	g := newGroup(spec)
	close(g.owned)
	out := &lockedWriter{w: spec.Output}
	ports, err := freePorts(spec.Replicas)
	if err != nil {
		return nil, fmt.Errorf("launch slot %s: %w", spec.Slot, err)
	}
	for _, port := range ports {
		g.procs = append(g.procs, g.newProcess(out, prog, port))
	}
	g.run0()
	return g, nil
}

// newGroup returns a group of spec (defaults filled) with no processes.
func newGroup(spec Spec) *Group {
	return &Group{spec: spec, owned: make(chan struct{}), released: make(chan struct{}), resumed: make(chan struct{})}
}

// newProcess returns the replica on port, running spec's command.
func (g *Group) newProcess(out io.Writer, prog string, port int) *process {
	addr := strings.ReplaceAll(g.spec.Address, "{port}", strconv.Itoa(port))
	return &process{addr: addr, port: port, args: expand(g.spec.Command, prog, port, g.spec.Version),
		tmpl: g.spec.Command, version: g.spec.Version,
		replace: make(chan replacement), out: &prefixWriter{w: out, prefix: g.spec.Slot + " " + addr + " | "}}
}

// run0 starts supervising every replica.
func (g *Group) run0() {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.spawner = newSpawner()
	for _, p := range g.procs {
		g.wg.Go(func() { g.supervise(ctx, p) })
	}
}

// expand returns command with {port} and {version} replaced, its program
// being prog.
func expand(command []string, prog string, port int, version string) []string {
	r := strings.NewReplacer("{port}", strconv.Itoa(port), "{version}", version)
	args := make([]string, len(command))
	for i, a := range command {
		args[i] = r.Replace(a)
	}
	args[0] = r.Replace(prog)
	return args
}

// Replace stops the replica listening on addr (SIGTERM, then SIGKILL after
// StopTimeout) and starts command in its place, on the same port, with
// {version} replaced by version: a rolling update. It returns once the old
// command is gone and the new one is being started; whether it serves is
// for health checks to say. The new command is the one restarted should
// it exit.
func (g *Group) Replace(ctx context.Context, addr string, command []string, version string) error {
	if len(command) == 0 || command[0] == "" {
		return errors.New("launch: empty command")
	}
	if g.isHeld() {
		return fmt.Errorf("launch slot %s: an upgrade of vipswap is under way: try again when it is done", g.spec.Slot)
	}
	prog := command[0]
	if prog == "vipswap" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("launch: find the running binary: %w", err)
		}
		prog = self
	}
	for _, p := range g.procs {
		if p.addr != addr {
			continue
		}
		r := replacement{args: expand(command, prog, p.port, version), tmpl: command, version: version, done: make(chan error, 1)}
		select {
		case p.replace <- r:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-r.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("launch slot %s: no instance %s", g.spec.Slot, addr)
}

// Restarts returns, by address, how many times each replica exited on its
// own and was started again.
func (g *Group) Restarts() map[string]uint64 {
	out := make(map[string]uint64, len(g.procs))
	for _, p := range g.procs {
		out[p.addr] = p.restarts.Load()
	}
	return out
}

// Addrs returns the host:port of every replica, in order.
func (g *Group) Addrs() []string {
	addrs := make([]string, len(g.procs))
	for i, p := range g.procs {
		addrs[i] = p.addr
	}
	return addrs
}

// Close stops every process group (SIGTERM, then SIGKILL after
// StopTimeout) and waits until each is gone. It does not restart them.
func (g *Group) Close() {
	g.cancel()
	g.wg.Wait()
	g.spawner.close() // after the last process: Pdeathsig watches its thread
	g.releaseOnce.Do(func() {
		ports := make([]int, len(g.procs))
		for i, p := range g.procs {
			ports[i] = p.port
		}
		releasePorts(ports)
	})
}

// Kill sends SIGKILL to every running process group at once and returns
// without waiting: for a vipswap that must exit now. Close still waits.
// Processes adopted and not yet owned are not this group's to kill.
func (g *Group) Kill() {
	if !g.isOwned() {
		return
	}
	for _, p := range g.procs {
		if pgid := p.pgid.Load(); pgid > 0 {
			signalGroup(int(pgid), syscall.SIGKILL)
		}
	}
}

// supervise runs p until ctx ends or the group is released, restarting
// it with backoff when it exits. An adopted process is watched first.
func (g *Group) supervise(ctx context.Context, p *process) {
	log := g.spec.Logger.With("slot", g.spec.Slot, "instance", p.addr)
	backoff := 100 * time.Millisecond
	for {
		started := time.Now()
		var err error
		if a := p.adopted; a != nil {
			p.adopted = nil
			err = g.watch(ctx, p, a)
		} else {
			if !g.waitStart(ctx) {
				return
			}
			err = g.run(ctx, p)
		}
		if ctx.Err() != nil || err == errReleased {
			return
		}
		if err == errHeld {
			continue
		}
		if err == errReplaced {
			backoff = 100 * time.Millisecond
			continue
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		p.restarts.Add(1)
		log.Warn("instance exited; restarting", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-g.released:
			t.Stop()
			return
		case r := <-p.replace: // not running: the new command starts now
			t.Stop()
			p.setArgs(r)
			close(r.done)
			backoff = 100 * time.Millisecond
			continue
		case <-t.C:
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// setArgs makes r's command the one p runs from now on.
func (p *process) setArgs(r replacement) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.args, p.tmpl, p.version = r.args, r.tmpl, r.version
}

// waitStart waits until commands may start (see Hold); false when ctx
// ended or the group was released first.
func (g *Group) waitStart(ctx context.Context) bool {
	for {
		g.mu.Lock()
		held, resumed := g.held, g.resumed
		g.mu.Unlock()
		if !held {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-g.released:
			return false
		case <-resumed:
		}
	}
}

// run starts p once and waits until its process group is gone. When ctx
// ends it stops the group; when the command exits on its own, it stops
// what the command left in its group (an application under a shell that
// died), so that a restart never meets an orphan holding the port. When
// the group is released, it stops reading the output and returns,
// leaving the command running.
func (g *Group) run(ctx context.Context, p *process) error {
	p.mu.Lock()
	args, tmpl, version := p.args, p.tmpl, p.version
	p.mu.Unlock()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(p.port))
	if g.spec.Ledger != nil {
		cmd.Env = append(cmd.Env, g.spec.Ledger.marker())
	}
	cmd.SysProcAttr = sysProcAttr()
	// The output pipe is ours, not exec's: Wait then returns when the
	// command exits, even while an orphan in its group still holds the
	// pipe (exec's own pipe would make Wait wait for the orphan, and
	// cutting it with exec.Cmd.WaitDelay would close the pipe under an
	// application still draining, killing it with SIGPIPE at its next log
	// line). The copy ends when the whole group is gone. Its read end is
	// what an upgrade hands to the next vipswap process.
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = w, w
	g.mu.Lock() // Hold waits for a start under way
	if g.held {
		g.mu.Unlock()
		r.Close()
		w.Close()
		return errHeld
	}
	err = g.spawner.start(cmd)
	w.Close()
	if err != nil {
		g.mu.Unlock()
		r.Close()
		return err
	}
	pgid := cmd.Process.Pid // Setpgid: the command leads its own group
	rec := Record{Slot: g.spec.Slot, Addr: p.addr, PGID: pgid, Start: startTime(pgid), Port: p.port, Command: tmpl, Version: version}
	if g.spec.Ledger != nil {
		rec.Marker = g.spec.Ledger.id
	}
	p.pgid.Store(int64(pgid))
	p.mu.Lock()
	p.cur = &running{rec: rec, r: r}
	p.mu.Unlock()
	g.mu.Unlock()
	released := false
	defer func() {
		p.pgid.Store(0)
		p.mu.Lock()
		p.cur = nil
		p.mu.Unlock()
		if g.spec.Ledger != nil && !released {
			g.spec.Ledger.remove(pgid)
		}
	}()
	if g.spec.Ledger != nil {
		g.spec.Ledger.add(rec)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(p.out, r)
	}()
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()

	var exitErr error
	select {
	case <-exited:
		exitErr = waitErr
		if groupAlive(pgid) {
			g.spec.Logger.Warn("instance exited but left processes in its group; stopping them", "slot", g.spec.Slot, "instance", p.addr)
			g.stopGroup(pgid, nil, p)
		}
	case <-ctx.Done():
		g.stopGroup(pgid, exited, p)
		exitErr = waitErr
	case rp := <-p.replace:
		g.stopGroup(pgid, exited, p)
		p.setArgs(rp)
		defer close(rp.done)
		exitErr = errReplaced
	case <-g.released:
		// The next vipswap process reads the output from here on: stop
		// reading (what was read is written, a partial last line is
		// Release's to hand over), and leave the command running.
		released = true
		r.SetReadDeadline(time.Now())
		<-copied
		r.Close()
		return errReleased
	}
	finishCopy(r, copied)
	return exitErr
}

// finishCopy waits until the copy from r has read everything (every
// holder of the pipe's write end is gone), unless a process left the
// group (setsid) and still holds it: that one is not waited for.
func finishCopy(r *os.File, copied <-chan struct{}) {
	if copied == nil { // never read
		r.Close()
		return
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-copied:
	case <-t.C:
		r.Close()
		<-copied
	}
	r.Close()
}

// stopGroup sends SIGTERM to the process group pgid and waits until the
// command has exited (exited is closed, if not nil) and no process of the
// group is left, sending SIGKILL to the group after StopTimeout.
func (g *Group) stopGroup(pgid int, exited <-chan struct{}, p *process) {
	signalGroup(pgid, syscall.SIGTERM)
	deadline := time.NewTimer(g.spec.StopTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	killed := false
	for exited != nil || groupAlive(pgid) {
		select {
		case <-exited:
			exited = nil
		case <-tick.C:
		case <-deadline.C:
			if killed {
				// SIGKILL cannot be ignored: what is left is not ours to
				// wait for (a process in uninterruptible sleep, a zombie
				// nobody reaps). Report and go on.
				g.spec.Logger.Error("instance's processes did not die after SIGKILL", "slot", g.spec.Slot, "instance", p.addr, "pgid", pgid)
				if exited != nil {
					<-exited
				}
				return
			}
			g.spec.Logger.Warn("instance did not stop in time; killing its process group", "slot", g.spec.Slot, "instance", p.addr, "after", g.spec.StopTimeout)
			signalGroup(pgid, syscall.SIGKILL)
			killed = true
			deadline.Reset(5 * time.Second)
		}
	}
}

// freePorts asks the kernel for n different free loopback ports: each is
// held until all are picked, or the kernel could hand out one twice (seen:
// a slot's two replicas given the same port, the second never up). Nor is a
// port that a live Group of this process owns handed out again (seen: blue
// and green, started one after the other, given the same port before
// green's instance bound it): the ports stay reserved until release.
func freePorts(n int) ([]int, error) {
	reservedMu.Lock()
	defer reservedMu.Unlock()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100*n {
			return nil, errors.New("no free loopback port that is not already an instance's")
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		if reserved[port] {
			continue // held open until we return, so the kernel moves on
		}
		ports = append(ports, port)
	}
	for _, p := range ports {
		reserved[p] = true
	}
	return ports, nil
}

// reservePorts reserves ports as freePorts does (an adopted group's), or
// none if one of them is a live Group's of this process.
func reservePorts(ports []int) error {
	reservedMu.Lock()
	defer reservedMu.Unlock()
	for _, p := range ports {
		if reserved[p] {
			return fmt.Errorf("port %d is another instance's", p)
		}
	}
	for _, p := range ports {
		reserved[p] = true
	}
	return nil
}

// releasePorts gives back ports freePorts reserved.
func releasePorts(ports []int) {
	reservedMu.Lock()
	defer reservedMu.Unlock()
	for _, p := range ports {
		delete(reserved, p)
	}
}

var (
	reservedMu sync.Mutex
	reserved   = map[int]bool{} // ports of this process's live Groups
)

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
