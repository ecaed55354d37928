package launch

import (
	"errors"
	"os/exec"
	"runtime"
	"sync"
)

// spawner starts a group's commands from one goroutine locked to its OS
// thread for as long as the group runs. It was there for Pdeathsig, which
// fires when the thread that started the child exits, not when the process
// does; instances no longer have Pdeathsig (an upgrade hands them to the
// next vipswap process), but a dedicated thread keeps whatever a command
// inherits from the thread that forks it (its signal mask, say) the same
// for every start.
type spawner struct {
	reqs      chan spawnRequest
	done      chan struct{}
	closeOnce sync.Once
}

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan error
}

var errSpawnerClosed = errors.New("launch: the group is closed")

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnRequest), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	defer close(s.done)
	// Never unlocked: when the loop ends, the runtime ends the thread with
	// it, which is fine because every child it started is gone by then.
	runtime.LockOSThread()
	for req := range s.reqs {
		req.result <- req.cmd.Start()
	}
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	req := spawnRequest{cmd: cmd, result: make(chan error, 1)}
	select {
	case s.reqs <- req:
		return <-req.result
	case <-s.done:
		return errSpawnerClosed
	}
}

// close ends the spawner and waits for it; later calls do nothing. No
// start may be running.
func (s *spawner) close() {
	s.closeOnce.Do(func() { close(s.reqs) })
	<-s.done
}
