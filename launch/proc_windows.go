//go:build windows

package launch

import (
	"errors"
	"syscall"
)

// supported says why vipswap cannot start instances here: it stops an
// instance and everything the instance started as one process group, a
// thing of Unix systems. List the instances' addresses instead.
var supported = errors.New("starting instances (run:) needs Linux or another Unix system; list the instances' addresses instead")

func sysProcAttr() *syscall.SysProcAttr { return nil }
func signalGroup(int, syscall.Signal)   {}
func signalProcess(int, syscall.Signal) {}
func groupAlive(int) bool               { return false }
func readProc(int) (proc, bool)         { return proc{}, false }
func groupMembers(int) []proc           { return nil }
func startTime(int) uint64              { return 0 }
func hasEnv(int, string) bool           { return false }
func bootID() string                    { return "" }

// proc is a process; nothing is known of others here.
type proc struct {
	pid, pgid int
	state     byte
	start     uint64
}

// errNoHandOver says why a vipswap process cannot adopt the instances of
// the one it replaces here.
var errNoHandOver = errors.New("handing instances (run:) to a new vipswap process needs Linux (pidfd)")

func watchExit(int) (<-chan struct{}, func(), error) { return nil, nil, errNoHandOver }
