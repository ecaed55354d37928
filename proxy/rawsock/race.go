//go:build linux && race

package rawsock

import (
	"runtime"
	"syscall"
	"unsafe"
)

// Under the race detector, IO tells it what net.Conn's Read and Write
// tell it (see syscall.Read and syscall.Write): the bytes a read filled
// and a write took, and that a write happens before any later read, the
// peer's included: a client that reads an answer sees what its handler
// did before it wrote it, as the socket orders them. Without this, the
// detector reports such accesses as races (a raw write releases nothing
// for the peer's read to acquire), and what IO's buffers meet unsynchronised
// goes unseen.
//
// The edges are syscall's own, so that they join IO with net.Conn's
// reads and writes: a write to no descriptor releases them (syscall.Write
// does before it calls), a read of no bytes on the socket acquires them
// (syscall.Read does when the call succeeds, which a read of nothing on a
// socket does at once, without looking at the socket).

// raceReleaseIO is called before a write.
func raceReleaseIO() { syscall.Write(-1, nil) }

// raceReadRange is called with the bytes a write took.
func raceReadRange(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}

// raceRead is called after a read on fd filled p (empty at the end).
func raceRead(fd uintptr, p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
	syscall.Read(int(fd), nil)
}
