package h1

import "time"

// This file runs connections on goroutines kept from one connection to
// the next. A new goroutine starts with a small stack, and serving a
// request grows it by copying, twice or three times: with a new
// connection per request, the copies and a goroutine's start and exit
// were 6% of the CPU. A goroutine that has served a connection waits a
// moment for the next one (a new connection, or a parked one the client
// wrote to), its stack grown already.

const (
	// maxIdleWorkers bounds the goroutines waiting for a connection;
	// beyond it, one that is done exits.
	maxIdleWorkers = 256
	// workerIdle is how long a goroutine waits for a connection before it
	// exits: long enough to carry a steady stream of connections, short
	// enough that a burst's goroutines do not stay.
	workerIdle = 250 * time.Millisecond
)

// start serves c on a waiting goroutine, or on a new one when none waits.
func (s *Server) start(c *conn) {
	select {
	case s.work <- c:
	default:
		go s.worker(c)
	}
}

// worker serves c, then the connections start hands it, until none comes
// within workerIdle, maxIdleWorkers others wait already, or the server
// shuts down.
func (s *Server) worker(c *conn) {
	var t *time.Timer
	for {
		c.serve()
		c = nil // not kept alive while waiting
		if !s.waitingWorker() {
			return
		}
		if t == nil {
			t = time.NewTimer(workerIdle)
		} else {
			t.Reset(workerIdle)
		}
		select {
		case c = <-s.work:
			s.idleWorkers.Add(-1)
			t.Stop()
		case <-t.C:
			s.idleWorkers.Add(-1)
			return
		case <-s.done:
			s.idleWorkers.Add(-1)
			t.Stop()
			return
		}
	}
}

// waitingWorker counts one more goroutine waiting for a connection, unless
// maxIdleWorkers wait already; it reports whether it did.
func (s *Server) waitingWorker() bool {
	for {
		n := s.idleWorkers.Load()
		if n >= maxIdleWorkers {
			return false
		}
		if s.idleWorkers.CompareAndSwap(n, n+1) {
			return true
		}
	}
}
