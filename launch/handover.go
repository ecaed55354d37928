package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// How an upgrade hands a group's processes from one vipswap process to the
// next (Linux):
//
//  1. The old process calls Hold: no command starts any more (a crashed
//     instance waits to be restarted, Replace is refused), and Hold returns
//     each running instance with its record and the read end of its output
//     pipe, for the caller to pass to the new process.
//  2. The new process calls Adopt with those: it checks that each process
//     is the one recorded (same start time, the marker in its
//     environment), watches it through a pidfd (it is not its parent and
//     cannot wait for it), and neither starts, stops nor reads anything.
//  3. Once the new process serves, the old one calls Release: it stops
//     reading the output (a partial last line is returned, to be handed
//     over too) and watching, and lets go of the processes, which go on
//     running. Its Close stops nothing from then on.
//  4. The new process calls Own: it reads the output from where the old
//     one stopped, restarts what exits, and stops the processes on Close.
//
// Should the new process fail before it serves, the old calls Resume and
// goes on as before; the new one's Close lets the processes be. At every
// moment exactly one process may stop or restart them; between Release
// and Own, neither does (a crash then is restarted at Own) and the
// output waits in the pipe.

// Handed is a running instance handed from one vipswap process to the
// next.
type Handed struct {
	Record
	// Output is the read end of the instance's output pipe.
	Output *os.File
}

// Hold stops the group from starting commands (restarts, Replace) until
// Resume or Release, and returns the instances that run, each with the
// read end of its output pipe (still the group's: the caller duplicates
// it). A start under way finishes first.
func (g *Group) Hold() []Handed {
	g.mu.Lock()
	if !g.held {
		g.held, g.resumed = true, make(chan struct{})
	}
	g.mu.Unlock()
	var out []Handed
	for _, p := range g.procs {
		p.mu.Lock()
		if p.cur != nil {
			out = append(out, Handed{Record: p.cur.rec, Output: p.cur.r})
		}
		p.mu.Unlock()
	}
	return out
}

// Resume ends Hold: commands start again (an instance that exited
// meanwhile is started now).
func (g *Group) Resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held {
		g.held = false
		close(g.resumed)
	}
}

// isHeld reports whether commands may not start now.
func (g *Group) isHeld() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// isOwned reports whether the processes are this group's to stop.
func (g *Group) isOwned() bool {
	select {
	case <-g.owned:
		return true
	default:
		return false
	}
}

// Release lets go of the processes for another vipswap process to adopt:
// it stops reading their output and watching them, and leaves them
// running; Close and Kill stop nothing afterwards. It returns the partial
// last line of output each instance had written, by address, for the next
// process to complete. Call it after Hold.
func (g *Group) Release() map[string][]byte {
	g.releaseDone.Do(func() { close(g.released) })
	g.wg.Wait()
	pending := map[string][]byte{}
	for _, p := range g.procs {
		if len(p.out.pending) > 0 {
			pending[p.addr] = slices.Clone(p.out.pending)
		}
	}
	return pending
}

// Adopt takes over the instances of spec's slot that a previous vipswap
// process handed over (handed, one per replica): it does not start them,
// nor stop or restart them, nor read their output until Own. A handed
// process that is no longer the one recorded (it exited, or its PID is
// another process's now) is not adopted: its replica starts afresh at Own.
// Adopt refuses (and closes every Output) when the handed instances are
// not what spec would run: another command, version, address or number
// of replicas.
func Adopt(spec Spec, handed []Handed) (*Group, error) {
	closeAll := func() {
		for _, h := range handed {
			if h.Output != nil {
				h.Output.Close()
			}
		}
	}
	if errNoHandOver != nil {
		closeAll()
		return nil, fmt.Errorf("launch slot %s: %w", spec.Slot, errNoHandOver)
	}
	spec, prog, err := defaults(spec)
	if err != nil {
		closeAll()
		return nil, err
	}
	if err := matches(spec, handed); err != nil {
		closeAll()
		return nil, fmt.Errorf("launch slot %s: the running instances are not the configuration's: %w", spec.Slot, err)
	}
	ports := make([]int, len(handed))
	for i, h := range handed {
		ports[i] = h.Port
	}
	if err := reservePorts(ports); err != nil {
		closeAll()
		return nil, fmt.Errorf("launch slot %s: %w", spec.Slot, err)
	}
	g := newGroup(spec)
	g.held = true // until Own
	out := &lockedWriter{w: spec.Output}
	for _, h := range handed {
		p := g.newProcess(out, prog, h.Port)
		a, err := adopt(h)
		if err != nil {
			spec.Logger.Warn("a handed instance cannot be adopted: it starts afresh", "slot", spec.Slot, "instance", h.Addr, "pgid", h.PGID, "err", err)
			if h.Output != nil {
				h.Output.Close()
			}
		} else {
			p.adopted = a
			p.pgid.Store(int64(a.rec.PGID)) // before Adopt returns: Hold and Kill see it
			p.cur = &running{rec: a.rec, r: a.out}
		}
		g.procs = append(g.procs, p)
	}
	g.run0()
	return g, nil
}

// defaults fills spec's defaults and checks it; prog is the program to run.
func defaults(spec Spec) (Spec, string, error) {
	if len(spec.Command) == 0 {
		return spec, "", errors.New("launch: empty command")
	}
	if spec.Address == "" {
		spec.Address = DefaultAddress
	}
	if host, port, err := net.SplitHostPort(spec.Address); err != nil || host == "" || port != "{port}" {
		return spec, "", fmt.Errorf("launch slot %s: address %q: want host:{port}", spec.Slot, spec.Address)
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
			return spec, "", fmt.Errorf("launch: find the running binary: %w", err)
		}
		prog = self
	}
	return spec, prog, nil
}

// matches says how handed differs from what spec runs, nil if it does not.
func matches(spec Spec, handed []Handed) error {
	if len(handed) != spec.Replicas {
		return fmt.Errorf("%d running, %d replicas configured", len(handed), spec.Replicas)
	}
	seen := map[int]bool{}
	for _, h := range handed {
		switch {
		case h.Slot != spec.Slot:
			return fmt.Errorf("instance %s is slot %s's", h.Addr, h.Slot)
		case !slices.Equal(h.Command, spec.Command):
			return fmt.Errorf("instance %s runs %q, the configuration %q", h.Addr, h.Command, spec.Command)
		case h.Version != spec.Version:
			return fmt.Errorf("instance %s runs version %q, the configuration %q", h.Addr, h.Version, spec.Version)
		case h.Port <= 0 || h.Port > 65535 || seen[h.Port]:
			return fmt.Errorf("instance %s: port %d", h.Addr, h.Port)
		case strings.ReplaceAll(spec.Address, "{port}", strconv.Itoa(h.Port)) != h.Addr:
			return fmt.Errorf("instance %s is not at address %s", h.Addr, spec.Address)
		}
		seen[h.Port] = true
	}
	return nil
}

// adoptee is a handed process being watched.
type adoptee struct {
	rec    Record
	out    *os.File
	exited <-chan struct{} // closed when the process has exited
	stop   func()          // stops watching
}

// adopt checks that h's process is the one recorded and watches it.
func adopt(h Handed) (*adoptee, error) {
	if h.PGID <= 1 || h.Start == 0 || h.Marker == "" || h.Output == nil {
		return nil, errors.New("incomplete record")
	}
	// Watch first: a pidfd names one process for good, so what is checked
	// next is the process watched, whatever reuses the PID later.
	exited, stop, err := watchExit(h.PGID)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", h.PGID, err)
	}
	p, ok := readProc(h.PGID)
	switch {
	case !ok || p.state == 'Z' || p.state == 'X':
		err = fmt.Errorf("process %d has exited", h.PGID)
	case p.start != h.Start || p.pgid != h.PGID:
		err = fmt.Errorf("process %d is not the one recorded (started at %d, group %d)", h.PGID, p.start, p.pgid)
	case !hasEnv(h.PGID, markerEnv+"="+h.Marker):
		err = fmt.Errorf("process %d does not carry the marker of the vipswap that started it", h.PGID)
	}
	if err != nil {
		stop()
		return nil, err
	}
	return &adoptee{rec: h.Record, out: h.Output, exited: exited, stop: stop}, nil
}

// Own makes the adopted processes this group's: it reads their output
// from here on, pending (by address, from Release) first; restarts what
// exits (and starts the replicas that could not be adopted); and stops
// them on Close.
func (g *Group) Own(pending map[string][]byte) {
	g.ownOnce.Do(func() {
		for _, p := range g.procs {
			if b := pending[p.addr]; len(b) > 0 && len(b) < 1<<20 && len(p.out.pending) == 0 {
				p.out.pending = slices.Clone(b) // before the copy starts: close(owned) orders it
			}
		}
		close(g.owned)
	})
	g.Resume()
}

// watch is run for an adopted process: it waits until the process exits,
// ctx ends or the group is released. It stops nothing and reads nothing
// until the group is owned.
func (g *Group) watch(ctx context.Context, p *process, a *adoptee) error {
	defer a.stop()
	pgid := a.rec.PGID
	p.pgid.Store(int64(pgid))
	p.mu.Lock()
	p.cur = &running{rec: a.rec, r: a.out}
	p.mu.Unlock()
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
		g.spec.Ledger.add(a.rec)
	}
	var copied chan struct{}
	owned := g.owned
	stopCopy := func() {
		if copied != nil {
			a.out.SetReadDeadline(time.Now())
			<-copied
		}
		a.out.Close()
	}
	for {
		select {
		case <-owned:
			owned = nil
			copied = make(chan struct{})
			go func() {
				defer close(copied)
				io.Copy(p.out, a.out)
			}()
		case <-a.exited:
			if !g.isOwned() {
				// The previous process still owns it: it stops what the
				// command left in its group.
				stopCopy()
				return errors.New("an adopted instance exited")
			}
			if groupAlive(pgid) {
				g.spec.Logger.Warn("instance exited but left processes in its group; stopping them", "slot", g.spec.Slot, "instance", p.addr)
				g.stopGroup(pgid, nil, p)
			}
			finishCopy(a.out, copied)
			return errors.New("an adopted instance exited")
		case <-ctx.Done():
			if !g.isOwned() {
				released = true // never ours: the previous process keeps it
				stopCopy()
				return ctx.Err()
			}
			g.stopGroup(pgid, a.exited, p)
			finishCopy(a.out, copied)
			return nil
		case rp := <-p.replace:
			g.stopGroup(pgid, a.exited, p)
			p.setArgs(rp)
			finishCopy(a.out, copied)
			close(rp.done)
			return errReplaced
		case <-g.released:
			released = true
			stopCopy()
			return errReleased
		}
	}
}

// CanHandOver reports whether instances can be handed to a new vipswap
// process on this system (Linux); elsewhere an upgrade with managed
// instances is refused.
func CanHandOver() bool { return errNoHandOver == nil }
