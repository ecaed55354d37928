package control

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// MaxShadowDuration bounds a shadow's duration.
const MaxShadowDuration = 7 * 24 * time.Hour

// shadowOf checks req against the state in force and returns the shadow it
// asks for. Every mistake is the caller's (Invalid), named in one line.
func (c *Controller) shadowOf(req wire.ShadowRequest, now time.Time) (state.Shadow, error) {
	sh := state.Shadow{To: req.To, Started: now.UTC(), Actor: req.Actor}
	if sh.Actor == "" {
		sh.Actor = "local"
	}
	if req.To == "" {
		return sh, invalid(fmt.Errorf("to: name the slot the copies go to"))
	}
	pm := req.Percent * 10
	if math.IsNaN(pm) || pm < 1 || pm > state.Whole || math.Abs(pm-math.Round(pm)) > 1e-6 {
		return sh, invalid(fmt.Errorf("percent: want above 0 and at most 100 in steps of 0.1, got %v", req.Percent))
	}
	sh.PerMille = int(math.Round(pm))
	methods := req.Methods
	if len(methods) == 0 {
		methods = []string{"GET", "HEAD"}
	}
	for _, m := range methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if !validMethod(m) {
			return sh, invalid(fmt.Errorf("methods: %q is not a request method (want names such as GET,HEAD)", m))
		}
		if !slices.Contains(sh.Methods, m) {
			sh.Methods = append(sh.Methods, m)
		}
	}
	slices.Sort(sh.Methods)
	if req.Duration != "" {
		d, err := time.ParseDuration(req.Duration)
		if err != nil || d <= 0 || d > MaxShadowDuration {
			return sh, invalid(fmt.Errorf("duration: want a duration above 0 and at most %s such as 5m, got %q", MaxShadowDuration, req.Duration))
		}
		sh.Until = sh.Started.Add(d)
	}
	for _, f := range req.IgnoreFields {
		if f == "" || len(f) > 200 || f == "$." {
			return sh, invalid(fmt.Errorf("ignore_fields: want field names or paths such as timestamp or $.meta.id, got %q", f))
		}
	}
	for _, h := range req.IgnoreHeaders {
		if !headerNameRE.MatchString(h) {
			return sh, invalid(fmt.Errorf("ignore_headers: want header names such as X-Request-Id, got %q", h))
		}
	}
	if len(req.IgnoreFields) > 64 || len(req.IgnoreHeaders) > 64 {
		return sh, invalid(fmt.Errorf("ignore lists: at most 64 entries each"))
	}
	sh.IgnoreFields, sh.IgnoreHeaders = slices.Clone(req.IgnoreFields), slices.Clone(req.IgnoreHeaders)
	if err := c.knownSlot(req.To); err != nil {
		return sh, invalid(err)
	}
	c.mu.Lock()
	st := c.st
	routed := c.routedLocked(st, req.To)
	c.mu.Unlock()
	if req.To == st.Active || st.WeightOf(req.To) > 0 {
		return sh, invalid(fmt.Errorf("to: slot %q takes prod traffic; a shadow goes to a slot that takes none", req.To))
	}
	if routed != "" {
		return sh, invalid(fmt.Errorf("to: slot %q takes prod traffic (%s); a shadow goes to a slot that takes none", req.To, routed))
	}
	return sh, nil
}

// routedLocked says which version routes in force with st send prod
// requests to slot ("route /beta/*, route ..."), or "" when none does.
// Called with c.mu held.
func (c *Controller) routedLocked(st state.State, slot string) string {
	return routedBy(c.cfg.Routes, st, slot)
}

// routedBy says which of routes (the configuration's) and st's routes send
// prod requests to slot ("route /beta/*, route ..."), or "" when none does.
func routedBy(routes []route.Route, st state.State, slot string) string {
	by := routedSlots(routes, st)[slot]
	if len(by) == 0 {
		return ""
	}
	return "route " + strings.Join(by, ", route ")
}

// routedWhy says why a shadow to slot ends: routed (routedBy) sends prod
// requests to it.
func routedWhy(slot, routed string) string {
	return "slot " + slot + " takes prod traffic now (" + routed + ")"
}

// validMethod reports whether m is an HTTP method token the mirror copies:
// CONNECT (a tunnel) is none.
func validMethod(m string) bool {
	if m == "" || len(m) > 20 || m == "CONNECT" {
		return false
	}
	for _, r := range m {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}

// StartShadow starts copying a sample of prod's requests to req.To, as one
// compare-and-swap recorded in the history. A bad request changes nothing.
func (c *Controller) StartShadow(ctx context.Context, req wire.ShadowRequest) (wire.Change, error) {
	sh, err := c.shadowOf(req, time.Now())
	if err != nil {
		return wire.Change{Operation: "shadow start"}, err
	}
	what := fmt.Sprintf("shadow: %s of prod's %s to %s", state.Percent(sh.PerMille), strings.Join(sh.Methods, ","), sh.To)
	if !sh.Until.IsZero() {
		what += " until " + sh.Until.Format(time.RFC3339)
	}
	return c.change(ctx, operation{name: "shadow start", req: req.ChangeRequest, changes: []string{what},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			res.To = sh.To
			if routed := c.routedLocked(st, sh.To); routed != "" {
				return st, &state.RefusedError{Reason: fmt.Sprintf("shadow refused: slot %q takes prod traffic (%s); a shadow goes to a slot that takes none", sh.To, routed)}
			}
			return st.StartShadow(sh, c.slotNamesLocked())
		}})
}

// StopShadow ends the running shadow.
func (c *Controller) StopShadow(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	return c.change(ctx, operation{name: "shadow stop", req: req, next: func(st state.State, res *wire.Change) (state.State, error) {
		if st.Shadow != nil {
			res.To = st.Shadow.To
		}
		return st.StopShadow()
	}, describe: shadowStopped})
}

// shadowStopped describes the end of the shadow cur runs, in the state a
// stop was computed from.
func shadowStopped(cur state.State) []string {
	if cur.Shadow == nil {
		return nil
	}
	return []string{"shadow: to " + cur.Shadow.To + " stopped"}
}

// Shadow returns the running shadow with this node's figures, or nil when
// none runs.
func (c *Controller) Shadow() *wire.Shadow {
	c.mu.Lock()
	sh := c.st.Shadow
	c.mu.Unlock()
	if sh == nil {
		return nil
	}
	out := &wire.Shadow{
		To: sh.To, Percent: float64(sh.PerMille) / 10, Methods: slices.Clone(sh.Methods), Started: sh.Started,
		IgnoreFields: slices.Clone(sh.IgnoreFields), IgnoreHeaders: slices.Clone(sh.IgnoreHeaders), Actor: sh.Actor,
	}
	if !sh.Until.IsZero() {
		u := sh.Until
		out.Until = &u
	}
	if c.cfg.Shadow != nil {
		if fig := c.cfg.Shadow.Figures(); fig != nil {
			out.Figures = fig
			out.IgnoreFields, out.IgnoreHeaders = c.cfg.Shadow.Effective()
		}
	}
	return out
}

// ShadowPlane mirrors prod's requests for the shadow in force (package
// shadow). The controller tells it every state's shadow and reads its
// figures.
type ShadowPlane interface {
	// Set puts sh in force (nil: none). It is called with the
	// controller's lock held and must not block.
	Set(sh *state.Shadow)
	// Figures returns what the running shadow counted, or nil when none
	// runs.
	Figures() *wire.ShadowFigures
	// Effective returns the ignore lists the running shadow compares
	// with: the configuration's and its own.
	Effective() (fields, headers []string)
}

// endShadowLocked returns next without a shadow that cannot go on in it
// (its slot is gone or takes prod traffic, its time is up), and the
// history line that says so; next unchanged and "" otherwise. Called with
// c.mu held.
func (c *Controller) endShadowLocked(next state.State, now time.Time) (state.State, string) {
	why := next.ShadowEnds(namesOf(members(next, c.cfg.Slots, c.running)), now)
	if why == "" && next.Shadow != nil {
		if routed := c.routedLocked(next, next.Shadow.To); routed != "" {
			why = routedWhy(next.Shadow.To, routed)
		}
	}
	if why == "" {
		return next, ""
	}
	to := next.Shadow.To
	next, _ = next.StopShadow()
	return next, "shadow: to " + to + " ended, " + why
}

// endShadowIfDue ends a shadow whose duration is over, as its own change.
// Called from the rollout's owner goroutine alone, which owns retry: a
// failed attempt (the store out of reach) is tried again 5s later, not at
// every tick.
func (c *Controller) endShadowIfDue(ctx context.Context, now time.Time, retry *time.Time) {
	c.mu.Lock()
	sh := c.st.Shadow
	c.mu.Unlock()
	if sh == nil || sh.Until.IsZero() || now.Before(sh.Until) || now.Before(*retry) || (c.cfg.Leading != nil && !c.cfg.Leading()) {
		return
	}
	if _, err := c.StopShadow(ctx, wire.ChangeRequest{Actor: "vipswap", Reason: "the shadow's duration is over"}); err != nil {
		c.log.Warn("could not end a shadow whose duration is over; trying again in 5s", "err", err)
		*retry = now.Add(5 * time.Second)
	}
}

// errShadowGone says that the shadow a mirror stopped has ended already.
var errShadowGone = errors.New("the shadow the mirror stopped has ended already")

// ShadowStopped ends the running shadow because the mirror stopped copying
// by itself (why says so), if it is still the one started at started: a
// later shadow (the operator stopped the first and started another
// meanwhile, or another node's mirror stopped it first) goes on.
func (c *Controller) ShadowStopped(ctx context.Context, started time.Time, why string) {
	op := operation{name: "shadow stop", req: wire.ChangeRequest{Actor: "vipswap", Reason: why},
		next: func(st state.State, res *wire.Change) (state.State, error) {
			if st.Shadow == nil || !st.Shadow.Started.Equal(started) {
				return st, errShadowGone // ended already: nothing to do
			}
			res.To = st.Shadow.To
			return st.StopShadow()
		}, describe: shadowStopped}
	c.mu.Lock()
	running := c.st.Shadow != nil && c.st.Shadow.Started.Equal(started)
	c.mu.Unlock()
	if !running {
		return // ended already: nothing to do (nor to count as a failed change)
	}
	if _, err := c.change(ctx, op); err != nil && !errors.Is(err, errShadowGone) {
		c.log.Warn("could not end a shadow the mirror stopped", "reason", why, "err", err)
	}
}
