// Package node is a running vipswap: it binds the listeners, opens the
// state store, starts the managed instances of run: slots and supervises
// them, and runs the controller, the data planes (vipswap's proxy, and
// HAProxy when configured), the health checks, the release runner, the
// metrics and the admin API until it is stopped. It applies a reload of
// the configuration file as one transaction: all of it, or nothing.
//
// The CLI (cmd/vipswap) parses flags, reads the file and calls Run; no
// other package imports this one.
package node

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/vipswap/vipswap/config"
)

// ExitForced is the exit status of a node stopped at once by a second
// SIGINT or SIGTERM.
const ExitForced = 1

// Setup is what a node runs with.
type Setup struct {
	// Path is the configuration file, which reloads re-read.
	Path string
	// Config is that file's configuration, as config.Load returned it.
	Config *config.Config
	// Stderr receives the log and the managed instances' output.
	Stderr io.Writer
	// Version is the build's, for the log and the metrics.
	Version string
	// Upgrades lets the process hand its listening sockets to a new one
	// (vipswap upgrade, SIGUSR2) and take them from the one it replaces.
	// Only one node per process may have it.
	Upgrades bool
	// UpgradeTimeout bounds how long a new process may take to become
	// ready (0: DefaultUpgradeTimeout).
	UpgradeTimeout time.Duration
	// PIDFile receives the process's PID once it serves, and the new
	// process's after an upgrade (for systemd's PIDFile=); "" is the state
	// file's name with .pid for its extension, beside it, when Upgrades is set.
	PIDFile string
}

// Run runs a node as the vipswap process does, until ctx ends or a SIGINT
// or SIGTERM arrives; then it shuts down gracefully: requests in flight
// finish, the managed instances stop, the store closes. A second signal
// kills the managed instances and exits the process at once (ExitForced).
// SIGHUP reloads the configuration file. It returns an error when the
// node cannot start (an address taken, a store that does not open, ...)
// or a listener fails.
func Run(ctx context.Context, setup Setup) error {
	logs, log := newLogSwitch(setup.Config.Log, setup.Stderr)
	// A switch must outlive a closed log pipe: a write to it then fails
	// instead of killing the process.
	signal.Ignore(syscall.SIGPIPE)
	// The first SIGINT or SIGTERM stops vipswap gracefully; a second one
	// stops it at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	force := make(chan struct{})
	done := make(chan struct{})
	var watch sync.WaitGroup
	defer watch.Wait()
	defer close(done)
	watch.Go(func() { stopOnSignal(sigs, log, stop, force, done) })
	// SIGHUP reloads the configuration file.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	n := newNode(setup, logs, log)
	if setup.Upgrades {
		pidFile := setup.PIDFile
		if pidFile == "" {
			// systemd must learn the new process's PID after an upgrade
			// (MAINPID=): the new process writes it here, the old one
			// reads it and tells systemd. (The new process cannot know
			// whether systemd runs it: NOTIFY_SOCKET is not passed on.)
			pidFile = setup.Config.State.LocalBase() + ".pid"
		}
		ho, err := newHandover(setup.UpgradeTimeout, pidFile)
		if err != nil {
			return err
		}
		defer signal.Stop(ho.sig)
		n.ho = ho
	}
	return serve(ctx, n, force, hup)
}

// stopOnSignal calls stop on the first of sigs and closes force on the
// second, until done is closed.
func stopOnSignal(sigs <-chan os.Signal, log *slog.Logger, stop func(), force, done chan struct{}) {
	select {
	case sig := <-sigs:
		log.Info("stopping: "+sig.String()+" received; another one stops at once", "signal", sig.String())
		stop()
	case <-done:
		return
	}
	select {
	case <-sigs:
		close(force)
	case <-done:
	}
}
