//go:build unix && !linux

package launch

import (
	"errors"
	"syscall"
)

// sysProcAttr puts each instance in its own process group, so that vipswap
// signals the command and everything it started together, and a Ctrl-C in
// vipswap's terminal reaches vipswap alone. Only Linux can make the
// instances die with vipswap.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// signalGroup sends sig to every process of the group pgid.
func signalGroup(pgid int, sig syscall.Signal) { syscall.Kill(-pgid, sig) }

// groupAlive reports whether a process of the group pgid still exists.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }

// proc is a process; without /proc nothing is known of others.
type proc struct {
	pid, pgid int
	state     byte
	start     uint64
}

func readProc(int) (proc, bool) { return proc{}, false }
func groupMembers(int) []proc   { return nil }
func startTime(int) uint64      { return 0 }
func hasEnv(int, string) bool   { return false }
func bootID() string            { return "" }

// signalProcess sends sig to the process pid.
func signalProcess(pid int, sig syscall.Signal) { syscall.Kill(pid, sig) }

// supported is nil where vipswap can start and stop process groups.
var supported error

// errNoHandOver says why a vipswap process cannot adopt the instances of
// the one it replaces here.
var errNoHandOver = errors.New("handing instances (run:) to a new vipswap process needs Linux (pidfd)")

func watchExit(int) (<-chan struct{}, func(), error) { return nil, nil, errNoHandOver }
