package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/launch"
	"github.com/vipswap/vipswap/state"
)

// supervisor runs the managed instances of run: slots, a launch.Group per
// slot: those of the configuration file and those added at runtime. It is
// the controller's control.Launcher; a reload starts and stops groups
// through it.
type supervisor struct {
	output io.Writer // the instances' output
	log    *slog.Logger
	ledger *launch.Ledger // set once, before the first group starts

	mu      sync.Mutex               // guards groups; held briefly
	groups  map[string]*launch.Group // by slot
	closing sync.WaitGroup           // groups of removed slots, stopping
}

// newSupervisor returns a supervisor that runs no instances yet.
func newSupervisor(output io.Writer, log *slog.Logger) *supervisor {
	return &supervisor{output: output, log: log, groups: map[string]*launch.Group{}}
}

// Launch starts a managed slot added at runtime (control.Launcher).
func (s *supervisor) Launch(slot string, run state.RunSpec, version string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[slot] != nil {
		return nil
	}
	g, err := s.start(slot, configSlot(run, version))
	if err != nil {
		return err
	}
	s.groups[slot] = g
	return nil
}

// configSlot returns a managed slot's run block as the configuration
// holds one.
func configSlot(run state.RunSpec, version string) config.Slot {
	return config.Slot{Version: version, Run: &config.Run{Command: run.Command, Address: run.Address, Replicas: run.Replicas, StopTimeout: run.StopTimeout}}
}

// Relaunch starts slot's instances anew in place of the running ones
// (control.Launcher): a deploy to a slot that takes no prod traffic.
func (s *supervisor) Relaunch(slot string, run state.RunSpec, version string) (func(keep bool), error) {
	g, err := s.start(slot, configSlot(run, version))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	old := s.groups[slot]
	s.groups[slot] = g
	s.mu.Unlock()
	return func(keep bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		stop := old
		if !keep && s.groups[slot] == g {
			s.groups[slot], stop = old, g
		}
		if stop != nil {
			s.closing.Go(stop.Close) // out of the routing table: SIGTERM lets them finish what they have
		}
	}, nil
}

// Replace restarts one managed instance with another command on the same
// address (control.Launcher): a rolling update.
func (s *supervisor) Replace(ctx context.Context, slot, addr string, command []string, version string) error {
	s.mu.Lock()
	g := s.groups[slot]
	s.mu.Unlock()
	if g == nil {
		return fmt.Errorf("slot %q: no instances running", slot)
	}
	return g.Replace(ctx, addr, command, version)
}

// Addrs returns where a managed slot's instances listen (control.Launcher).
func (s *supervisor) Addrs(slot string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[slot]; g != nil {
		return g.Addrs()
	}
	return nil
}

// keepSlots stops, in the background, the managed instances of the slots
// not in names (removed at runtime); they finish what they have in flight.
// It is the controller's OnSlots.
func (s *supervisor) keepSlots(names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, g := range s.groups {
		if !slices.Contains(names, name) {
			delete(s.groups, name)
			s.closing.Go(g.Close)
		}
	}
}

// start starts slot name's managed instances; it does not add them to
// the supervisor's groups.
func (s *supervisor) start(name string, slot config.Slot) (*launch.Group, error) {
	g, err := launch.Start(launch.Spec{
		Slot: name, Command: slot.Run.Command, Address: slot.Run.Address, Replicas: slot.Run.Replicas,
		StopTimeout: slot.Run.StopTimeout, Output: s.output, Logger: s.log, Ledger: s.ledger, Version: slot.Version,
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("started instances", "slot", name, "instances", g.Addrs())
	return g, nil
}

// add makes g slot name's group, so that killAll kills it too.
func (s *supervisor) add(name string, g *launch.Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[name] = g
}

// forget takes the groups of started out of the supervisor and stops them,
// and waits: what a reload that does not go through started.
func (s *supervisor) forget(started map[string]*launch.Group) {
	s.mu.Lock()
	for name := range started {
		delete(s.groups, name)
	}
	s.mu.Unlock()
	for _, g := range started {
		g.Close()
	}
}

// replaceAll makes groups the supervisor's and returns the groups it
// had that groups does not hold, for the caller to stop.
func (s *supervisor) replaceAll(groups map[string]*launch.Group) []*launch.Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	var stopping []*launch.Group
	for name, g := range s.groups {
		if groups[name] == nil {
			stopping = append(stopping, g)
		}
	}
	s.groups = groups
	return stopping
}

// current returns the managed instance groups, by slot.
func (s *supervisor) current() map[string]*launch.Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.groups)
}

// restarts returns the managed instances' restarts, by slot and address.
func (s *supervisor) restarts() map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for slot, g := range s.current() {
		out[slot] = g.Restarts()
	}
	return out
}

// closeAll stops every managed instance, gracefully, and waits.
func (s *supervisor) closeAll() {
	var wg sync.WaitGroup
	for _, g := range s.current() {
		wg.Go(g.Close)
	}
	wg.Wait()
	s.closing.Wait()
}

// killAll kills every managed instance at once.
func (s *supervisor) killAll() {
	for _, g := range s.current() {
		g.Kill()
	}
}
