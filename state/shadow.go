package state

import (
	"slices"
	"time"
)

// Shadow is a running mirror: a sample of prod's requests copied to a slot
// that takes no prod traffic, and its answers compared with prod's. It is
// operator state, kept and recorded like a rollout; what the mirror counted
// is not (those are the running node's figures).
type Shadow struct {
	// To is the slot the copies go to. It never takes prod traffic while
	// the shadow runs: a change that gives it some ends the shadow.
	To string `json:"to"`
	// PerMille is the share of prod's requests copied, 1 to Whole.
	PerMille int `json:"per_mille"`
	// Methods are the request methods copied (upper case, sorted).
	Methods []string `json:"methods"`
	// Started is when the shadow began (UTC); it tells one run from the next.
	Started time.Time `json:"started"`
	// Until, if set, is when the shadow ends by itself.
	Until time.Time `json:"until,omitzero"`
	// IgnoreFields are JSON fields left out of the comparison (a name
	// matches at any depth, a dotted path from the root with a leading
	// "$.").
	IgnoreFields []string `json:"ignore_fields,omitempty"`
	// IgnoreHeaders are response headers left out of the comparison.
	IgnoreHeaders []string `json:"ignore_headers,omitempty"`
	// Actor started it ("local", a token's name, "deploy green").
	Actor string `json:"actor,omitempty"`
}

func (sh *Shadow) clone() *Shadow {
	if sh == nil {
		return nil
	}
	c := *sh
	c.Methods = slices.Clone(sh.Methods)
	c.IgnoreFields = slices.Clone(sh.IgnoreFields)
	c.IgnoreHeaders = slices.Clone(sh.IgnoreHeaders)
	return &c
}

// StartShadow returns s with sh running. It is refused when a shadow
// runs already, when sh.To is no slot of slots, or when it takes prod
// traffic (the active slot, or a share of a shift or rollout): a copy
// would reach the very slot that answered the original.
func (s State) StartShadow(sh Shadow, slots []string) (State, error) {
	switch {
	case s.Shadow != nil:
		return s, refused("shadow refused: a shadow to %s runs already (vipswap shadow stop first)", s.Shadow.To)
	case !slices.Contains(slots, sh.To):
		return s, refused("shadow refused: no slot %q", sh.To)
	case sh.To == s.Active || s.WeightOf(sh.To) > 0:
		return s, refused("shadow refused: slot %q takes prod traffic; a shadow goes to a slot that takes none", sh.To)
	case s.Rollout != nil && s.Rollout.To == sh.To:
		return s, refused("shadow refused: a rollout to %s is running", sh.To)
	case sh.PerMille <= 0 || sh.PerMille > Whole:
		return s, refused("shadow refused: percent must be above 0 and at most 100, got %s", Percent(sh.PerMille))
	case len(sh.Methods) == 0:
		return s, refused("shadow refused: no method to copy")
	}
	next := s.clone()
	next.Shadow = sh.clone()
	return next, nil
}

// StopShadow returns s without its shadow; it is refused when none runs.
func (s State) StopShadow() (State, error) {
	if s.Shadow == nil {
		return s, refused("shadow stop refused: no shadow runs")
	}
	next := s.clone()
	next.Shadow = nil
	return next, nil
}

// ShadowEnds says why s's shadow cannot go on in s, or "" when it can (or
// none runs): its slot is gone (slots are those that exist), takes prod
// traffic now, or its time is up at now. A change that leads to such a
// state ends the shadow in the same step.
func (s State) ShadowEnds(slots []string, now time.Time) string {
	sh := s.Shadow
	switch {
	case sh == nil:
		return ""
	case !slices.Contains(slots, sh.To):
		return "slot " + sh.To + " was removed"
	case sh.To == s.Active || s.WeightOf(sh.To) > 0:
		return "slot " + sh.To + " takes prod traffic now"
	case !sh.Until.IsZero() && !now.Before(sh.Until):
		return "its duration is over"
	}
	return ""
}
