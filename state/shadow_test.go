package state

import (
	"strings"
	"testing"
	"time"
)

func TestShadowTransitions(t *testing.T) {
	slots := []string{"blue", "green", "red"}
	base := State{Active: "blue", Standby: "green"}
	sh := Shadow{To: "green", PerMille: 100, Methods: []string{"GET"}, Started: time.Unix(100, 0)}
	for _, tc := range []struct {
		name string
		st   State
		sh   Shadow
		want string // in the refusal; "" when allowed
	}{
		{"to the standby", base, sh, ""},
		{"to an idle slot", base, Shadow{To: "red", PerMille: 1000, Methods: []string{"GET"}}, ""},
		{"to the active slot", base, Shadow{To: "blue", PerMille: 100, Methods: []string{"GET"}}, "takes prod traffic"},
		{"to a canary", State{Active: "blue", Standby: "green", Weights: map[string]int{"blue": 900, "green": 100}}, sh, "takes prod traffic"},
		{"to no slot", base, Shadow{To: "x", PerMille: 100, Methods: []string{"GET"}}, `no slot "x"`},
		{"while one runs", State{Active: "blue", Standby: "green", Shadow: &sh}, sh, "runs already"},
		{"with no share", base, Shadow{To: "green", Methods: []string{"GET"}}, "percent"},
		{"with no method", base, Shadow{To: "green", PerMille: 10}, "method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, err := tc.st.StartShadow(tc.sh, slots)
			switch {
			case tc.want == "" && (err != nil || next.Shadow == nil || next.Shadow.To != tc.sh.To):
				t.Errorf("got %+v, %v; want the shadow running", next.Shadow, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v; want refused with %q", err, tc.want)
			case tc.want != "" && !next.Equal(tc.st):
				t.Errorf("a refused start changed the state to %+v", next)
			}
		})
	}
}

func TestShadowEnds(t *testing.T) {
	slots := []string{"blue", "green"}
	sh := &Shadow{To: "green", PerMille: 100, Methods: []string{"GET"}, Started: time.Unix(100, 0), Until: time.Unix(200, 0)}
	running := State{Active: "blue", Standby: "green", Shadow: sh}
	if why := running.ShadowEnds(slots, time.Unix(150, 0)); why != "" {
		t.Errorf("a shadow in its time ends: %q", why)
	}
	if why := running.ShadowEnds(slots, time.Unix(200, 0)); !strings.Contains(why, "duration") {
		t.Errorf("at its end: %q, want its duration over", why)
	}
	swapped, _ := running.Swap(Readiness{Routable: 1}, false)
	if why := swapped.ShadowEnds(slots, time.Unix(150, 0)); !strings.Contains(why, "takes prod traffic") {
		t.Errorf("after a swap to its slot: %q, want it to end", why)
	}
	if why := running.ShadowEnds([]string{"blue"}, time.Unix(150, 0)); !strings.Contains(why, "removed") {
		t.Errorf("without its slot: %q, want it to end", why)
	}
	if fit := running.Fit(map[string][]string{"blue": nil}); fit.Shadow != nil {
		t.Errorf("Fit kept a shadow to a slot that is gone")
	}
	stopped, err := running.StopShadow()
	if err != nil || stopped.Shadow != nil || running.Shadow == nil {
		t.Errorf("stop: %+v, %v; want none running and the receiver untouched", stopped.Shadow, err)
	}
	if _, err := stopped.StopShadow(); err == nil {
		t.Errorf("stopping no shadow was not refused")
	}
}
