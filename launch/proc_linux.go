package launch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts each instance in its own process group, so that vipswap
// signals the command and everything it started together, and a Ctrl-C in
// vipswap's terminal reaches vipswap alone. There is no Pdeathsig: an
// instance must outlive the vipswap process that started it when an
// upgrade hands it to the next one (only the child itself could clear
// Pdeathsig). After a kill -9 the Ledger finds the instances at the next
// start.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// errNoHandOver is nil where a vipswap process can adopt the instances
// of the one it replaces.
var errNoHandOver error

// watchExit returns a channel closed when process pid exits; stop ends
// the watch (and waits for it). It watches through a pidfd, which names
// the process for good, PID reuse or not; with a kernel older than 5.3
// (no pidfd_open) it reads /proc/PID/stat every 100ms, and the process
// has exited when its start time is another.
func watchExit(pid int) (exited <-chan struct{}, stop func(), err error) {
	done, quit, ended := make(chan struct{}), make(chan struct{}), make(chan struct{})
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ENOSYS) {
		first, ok := readProc(pid)
		if !ok {
			return nil, nil, fmt.Errorf("no process %d", pid)
		}
		go func() {
			defer close(ended)
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-quit:
					return
				case <-t.C:
				}
				if p, ok := readProc(pid); !ok || p.start != first.start || p.state == 'Z' || p.state == 'X' {
					close(done)
					return
				}
			}
		}()
		var once sync.Once
		return done, func() { once.Do(func() { close(quit) }); <-ended }, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pidfd_open: %w", err)
	}
	// A pidfd becomes readable when the process exits; non-blocking, the
	// runtime's poller waits for that without holding a thread.
	f := os.NewFile(uintptr(fd), "pidfd "+strconv.Itoa(pid))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	go func() {
		defer close(ended)
		err := rc.Read(func(fd uintptr) bool {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
			return err == nil && n > 0
		})
		if err == nil {
			close(done)
		}
	}()
	var once sync.Once
	return done, func() {
		once.Do(func() { f.Close() }) // ends the Read unless it has ended
		<-ended
	}, nil
}

// signalGroup sends sig to every process of the group pgid.
func signalGroup(pgid int, sig syscall.Signal) { syscall.Kill(-pgid, sig) }

// groupAlive reports whether a process of the group pgid is still running.
// Zombies do not count: an orphan that died waits for init to reap it, and
// init may be slow or, in some containers, never do it.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) == syscall.ESRCH {
		return false
	}
	return len(groupMembers(pgid)) > 0
}

// proc is one process as /proc/PID/stat shows it.
type proc struct {
	pid, pgid int
	state     byte
	start     uint64 // clock ticks after boot
}

// readProc reads /proc/PID/stat.
func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, false
	}
	// pid (comm) state ppid pgrp ... starttime is field 22; comm may hold
	// spaces and parentheses, so count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return proc{}, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return proc{}, false
	}
	pgid, err1 := strconv.Atoi(string(f[2]))
	start, err2 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || len(f[0]) != 1 {
		return proc{}, false
	}
	return proc{pid: pid, pgid: pgid, state: f[0][0], start: start}, true
}

// groupMembers returns the running (not zombie) processes of group pgid.
func groupMembers(pgid int) []proc {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []proc
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok && p.pgid == pgid && p.state != 'Z' && p.state != 'X' {
			out = append(out, p)
		}
	}
	return out
}

// startTime returns when pid started, in clock ticks after boot; 0 if
// unknown.
func startTime(pid int) uint64 {
	p, _ := readProc(pid)
	return p.start
}

// hasEnv reports whether pid's environment holds the entry kv exactly.
// A process that is not ours to read (another user's) does not.
func hasEnv(pid int, kv string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, e := range bytes.Split(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// bootID identifies this boot of the machine: processes of another boot
// are gone.
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return string(bytes.TrimSpace(b))
}

// signalProcess sends sig to the process pid.
func signalProcess(pid int, sig syscall.Signal) { syscall.Kill(pid, sig) }

// supported is nil where vipswap can start and stop process groups.
var supported error
