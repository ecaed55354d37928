package node

import (
	"context"
	"errors"
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

	mu      sync.Mutex               // guards groups, frozen; held briefly
	groups  map[string]*launch.Group // by slot
	closing sync.WaitGroup           // groups of removed slots, stopping
	frozen  bool                     // an upgrade hands the groups over: none starts

	handedMu sync.Mutex                     // guards handed, adopted
	handed   map[string][]launch.Handed     // instances to adopt, by slot (a new process)
	adopted  map[*launch.Group]map[int]bool // groups adopted and not yet owned, with their PGIDs
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
	if s.frozen {
		return errUpgrading
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
	s.mu.Lock()
	frozen := s.frozen
	s.mu.Unlock()
	if frozen {
		return nil, errUpgrading
	}
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
	spec := launch.Spec{
		Slot: name, Command: slot.Run.Command, Address: slot.Run.Address, Replicas: slot.Run.Replicas,
		StopTimeout: slot.Run.StopTimeout, Output: s.output, Logger: s.log, Ledger: s.ledger, Version: slot.Version,
	}
	if g := s.adopt(name, spec); g != nil {
		return g, nil
	}
	g, err := launch.Start(spec)
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

// errUpgrading refuses to start instances while an upgrade hands them over.
var errUpgrading = errors.New("an upgrade of vipswap is under way: try again when it is done")

// setHanded gives the supervisor the instances a previous process handed
// over, by slot, for start to adopt.
func (s *supervisor) setHanded(handed map[string][]launch.Handed) {
	s.handedMu.Lock()
	defer s.handedMu.Unlock()
	s.handed = handed
	s.adopted = map[*launch.Group]map[int]bool{}
}

// adopt returns a group of the instances handed over for slot name if
// they run what spec says, nil if there are none or they do not (they are
// then stopped once this process owns the instances; spec's start afresh).
func (s *supervisor) adopt(name string, spec launch.Spec) *launch.Group {
	s.handedMu.Lock()
	defer s.handedMu.Unlock()
	hs := s.handed[name]
	if len(hs) == 0 {
		return nil
	}
	delete(s.handed, name)
	pgids := map[int]bool{}
	for _, h := range hs {
		pgids[h.PGID] = true
	}
	g, err := launch.Adopt(spec, hs)
	if err != nil {
		s.log.Warn("not adopting the instances of the previous vipswap process: they are started afresh", "slot", name, "err", err)
		return nil
	}
	s.log.Info("adopted the instances of the previous vipswap process", "slot", name, "instances", g.Addrs())
	s.adopted[g] = pgids
	return g
}

// own makes the adopted groups this process's (pending: the partial lines
// the previous process had read), closes the output pipes of instances
// no slot adopted, and returns the process groups adopted.
func (s *supervisor) own(pending map[string][]byte) map[int]bool {
	s.handedMu.Lock()
	defer s.handedMu.Unlock()
	keep := map[int]bool{}
	for g, pgids := range s.adopted {
		g.Own(pending)
		maps.Copy(keep, pgids)
	}
	for _, hs := range s.handed {
		for _, h := range hs {
			h.Output.Close()
		}
	}
	s.handed, s.adopted = nil, nil
	return keep
}

// freeze stops new groups from starting (an upgrade hands them over) and
// returns the running ones.
func (s *supervisor) freeze() []*launch.Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = true
	return slices.Collect(maps.Values(s.groups))
}

// thaw ends freeze (the upgrade failed).
func (s *supervisor) thaw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = false
}
