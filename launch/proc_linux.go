package launch

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// sysProcAttr puts each instance in its own process group, so that vipswap
// signals the command and everything it started together, and a Ctrl-C in
// vipswap's terminal reaches vipswap alone; and it has Linux SIGKILL the
// command when vipswap dies, kill -9 included (see spawner for the thread
// this depends on). Processes the command starts do not inherit Pdeathsig:
// the Ledger finds those at the next start.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
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
