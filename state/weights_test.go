package state

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"
)

var ready = Readiness{Healthy: 2, Routable: 2}

func TestShift(t *testing.T) {
	s := State{Active: "blue", Standby: "green"}
	t.Run("a share to the target, the rest to the active slot", func(t *testing.T) {
		got, err := s.Shift("green", 200, ready, false)
		if err != nil || !maps.Equal(got.Weights, map[string]int{"green": 200, "blue": 800}) || got.Active != "blue" {
			t.Fatalf("got %+v, %v", got, err)
		}
		if p := got.Prod(); len(p) != 2 || p[0] != (Share{"blue", 800}) || p[1] != (Share{"green", 200}) {
			t.Fatalf("Prod() = %v, want blue 800 first, then green 200", p)
		}
	})
	t.Run("0.1% precision", func(t *testing.T) {
		got, _ := s.Shift("green", 1, ready, false)
		if got.WeightOf("green") != 1 || got.WeightOf("blue") != 999 || Percent(1) != "0.1%" {
			t.Fatalf("got %v", got.Weights)
		}
	})
	t.Run("100 completes: the target becomes active", func(t *testing.T) {
		mid, _ := s.Shift("green", 500, ready, false)
		got, err := mid.Shift("green", Whole, ready, false)
		if err != nil || got.Active != "green" || got.Standby != "blue" || got.Previous != "blue" || got.Weights != nil {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	t.Run("0 sends everything back", func(t *testing.T) {
		mid, _ := s.Shift("green", 500, ready, false)
		got, _ := mid.Shift("green", 0, ready, false)
		if got.Weights != nil || got.Active != "blue" || !got.Equal(s) {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("over three slots the rest keeps its proportions", func(t *testing.T) {
		three := State{Active: "blue", Standby: "green", Weights: map[string]int{"blue": 600, "green": 400}}
		got, _ := three.Shift("red", 500, ready, false)
		if !maps.Equal(got.Weights, map[string]int{"red": 500, "blue": 300, "green": 200}) {
			t.Fatalf("got %v", got.Weights)
		}
		odd, _ := three.Shift("red", 333, ready, false)
		sum := 0
		for _, w := range odd.Weights {
			sum += w
		}
		if sum != Whole {
			t.Fatalf("weights %v sum to %d", odd.Weights, sum)
		}
	})
	t.Run("refused without a routable instance, unless forced", func(t *testing.T) {
		if _, err := s.Shift("green", 100, Readiness{Healthy: 1}, false); !isRefused(err) {
			t.Fatalf("got %v", err)
		}
		if _, err := s.Shift("green", 100, Readiness{}, true); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Shift("blue", 100, ready, false); !isRefused(err) {
			t.Fatalf("shift to the active slot: %v", err)
		}
	})
	t.Run("a swap is the 0/100 case and clears weights", func(t *testing.T) {
		mid, _ := s.Shift("green", 300, ready, false)
		got, _ := mid.Swap(ready, false)
		if got.Active != "green" || got.Weights != nil {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("a state written before weights loads unchanged", func(t *testing.T) {
		var old State
		if err := json.Unmarshal([]byte(`{"active":"blue","standby":"green","previous":"green"}`), &old); err != nil {
			t.Fatal(err)
		}
		if p := old.Prod(); len(p) != 1 || p[0] != (Share{"blue", Whole}) || old.Check([]string{"blue", "green"}) != nil {
			t.Fatalf("Prod() = %v", p)
		}
	})
}

func TestRollout(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	s := State{Active: "blue", Standby: "green"}
	plan := Rollout{To: "green", Steps: []Step{{PerMille: 100}, {PerMille: 500, Pause: true}, {PerMille: Whole}}}
	r, err := s.StartRollout(plan, ready, false, now)
	if err != nil || r.WeightOf("green") != 100 || r.Rollout == nil || r.Rollout.Step != 0 || !r.Rollout.StepStarted.Equal(now) {
		t.Fatalf("start: %+v, %v", r, err)
	}
	if _, err := r.StartRollout(plan, ready, false, now); !isRefused(err) {
		t.Fatal("a second rollout was accepted")
	}
	if _, err := r.Swap(ready, false); !isRefused(err) {
		t.Fatal("a swap during a rollout was accepted")
	}
	if _, err := r.Promote(false, ready, now); !isRefused(err) {
		t.Fatal("promote of a rollout that is not paused was accepted")
	}
	r, _ = r.NextStep(ready, now.Add(time.Minute))
	if r.WeightOf("green") != 500 || r.Rollout.Step != 1 {
		t.Fatalf("step 2: %+v", r)
	}
	if _, err := r.Promote(false, ready, now.Add(time.Minute+15*time.Second)); !isRefused(err) || !strings.Contains(err.Error(), "not paused yet: it waits for its analysis") {
		t.Fatalf("promote of a pausing step before its pause: %v, want a refusal saying it pauses later", err)
	}
	r = r.PauseRollout()
	done, err := r.Promote(false, ready, now.Add(2*time.Minute))
	if err != nil || done.Rollout != nil || done.Active != "green" || done.Weights != nil {
		t.Fatalf("promote to the last step: %+v, %v", done, err)
	}
	aborted := r.Abort()
	if aborted.Rollout != nil || aborted.Weights != nil || aborted.Active != "blue" {
		t.Fatalf("abort: %+v", aborted)
	}
	if r.Rollout == nil || r.WeightOf("green") != 500 {
		t.Fatal("a transition changed its receiver")
	}
	full, _ := r.Promote(true, ready, now)
	if full.Active != "green" || full.Rollout != nil {
		t.Fatalf("promote --full: %+v", full)
	}
	if _, err := s.StartRollout(Rollout{To: "green", Steps: []Step{{PerMille: 500}}}, ready, false, now); !isRefused(err) {
		t.Fatal("a plan that does not end at 100% was accepted")
	}
}
