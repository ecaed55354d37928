package control

import (
	"context"
	"fmt"
	"time"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// RemotePlane is a data plane outside vipswap's process (HAProxy). Its
// Apply returns once the load balancer shows the table. The controller
// asks it before committing a change, reads drains' in-flight counts from
// it, and shows its view in status. It is given no table until the first
// health checks have answered (see Controller.flush).
type RemotePlane interface {
	DataPlane
	// Ready reports whether the load balancer can take a change now, to
	// a state whose tables use slots: it answers and has what they need.
	Ready(ctx context.Context, slots []string) error
	// InFlight returns the requests in flight in the load balancer on
	// the instance of slot at addr, or on all of slot's when addr is "".
	InFlight(slot, addr string) int64
	// View says how the load balancer sees an instance.
	View(slot, addr string) string
	// Served returns how many requests the load balancer sent the
	// instance of slot at addr and it answered, and the 5xx among them,
	// since the plane started.
	Served(slot, addr string) (served, errors uint64)
	// PlaneStatus says what it last applied.
	PlaneStatus() wire.PlaneStatus
	// Restarted says the process of slot's instance at addr was
	// replaced: the load balancer must not trust what it saw of the old
	// one (its health) until it has checked the new one.
	Restarted(ctx context.Context, slot, addr string) error
}

// Measurer is a remote data plane that measures its own convergence
// (the Azure drivers: until the VIP's first answer of the window that
// confirmed the switch, not until the window's last): Converged returns
// it for revision rev, if that is what the plane last applied. Without
// it, the time Apply took is the figure.
type Measurer interface {
	Converged(rev uint64) (time.Duration, bool)
}

// Planner is a remote data plane that can say, without changing
// anything, what it would change to route prod and stage as given: a dry
// run asks it (the Azure drivers).
type Planner interface {
	Plan(ctx context.Context, prod, stage []route.Weighted) ([]string, error)
}

// WholeSlots is a remote data plane that sends prod to one slot at a
// time (a load balancer's probes, a gateway's rule): a change that splits
// prod (a shift, a rollout) is refused before it is committed.
type WholeSlots interface {
	WholeSlotsOnly() string
}

// splitRefused says why a state that splits prod cannot be applied by a
// remote plane, or "".
func (c *Controller) splitRefused(op string, next state.State) string {
	if len(next.Prod()) < 2 {
		return ""
	}
	for _, r := range c.remotes() {
		if w, ok := r.(WholeSlots); ok {
			return fmt.Sprintf("%s refused: %s sends prod to one slot at a time and cannot split it; nothing changed", op, w.WholeSlotsOnly())
		}
	}
	return ""
}

// plans asks every remote plane that plans what it would change for st.
func (c *Controller) plans(ctx context.Context, st state.State) []string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sp := splits(st)
	var out []string
	for _, r := range c.remotes() {
		p, ok := r.(Planner)
		if !ok {
			continue
		}
		lines, err := p.Plan(ctx, sp[route.Prod], sp[route.Stage])
		if err != nil {
			out = append(out, fmt.Sprintf("%s: cannot say what it would change: %v", r.PlaneStatus().Name, err))
			continue
		}
		if len(lines) == 0 {
			lines = []string{r.PlaneStatus().Name + ": already shows it; nothing to change"}
		}
		out = append(out, lines...)
	}
	return out
}

// remotes returns the remote data planes.
func (c *Controller) remotes() []RemotePlane {
	var out []RemotePlane
	for _, p := range c.cfg.Planes {
		if r, ok := p.(RemotePlane); ok {
			out = append(out, r)
		}
	}
	return out
}

// remotesReady returns why a change to a state whose tables use slots
// cannot be applied now because a remote data plane cannot take it, or
// nil.
func (c *Controller) remotesReady(ctx context.Context, op string, slots []string) error {
	for _, r := range c.remotes() {
		if err := r.Ready(ctx, slots); err != nil {
			return &Error{Kind: Unavailable, Err: fmt.Errorf("%s not applied: %w; nothing changed", op, err)}
		}
	}
	return nil
}

// remoteWarnings says which remote data planes do not show revision rev,
// which a change just committed: the change stands (it is in the state)
// and the plane gets it as soon as it can.
func (c *Controller) remoteWarnings(rev uint64) []string {
	c.mu.Lock()
	gated := !c.remoteGate
	c.mu.Unlock()
	var out []string
	for _, r := range c.remotes() {
		ps := r.PlaneStatus()
		switch {
		case gated:
			out = append(out, fmt.Sprintf("%s has not applied revision %d yet: vipswap gives it the routing once the first health checks have answered", ps.Name, rev))
		case ps.Revision >= rev && !ps.Applied:
			out = append(out, fmt.Sprintf("%s has not applied revision %d: %s; it will be retried (vipswap status shows when it is applied)", ps.Name, rev, ps.Error))
		}
	}
	return out
}

// recordConverged remembers how long remote planes took to show the
// table of revision rev, for the measurement of the change that made it.
// Called with c.mu held.
func (c *Controller) recordConvergedLocked(rev uint64, took time.Duration) {
	if c.converged == nil {
		c.converged = make(map[uint64]time.Duration)
	}
	if len(c.converged) > 1000 {
		clear(c.converged) // nobody measures that many changes at once
	}
	c.converged[rev] = took
}
