package state

import (
	"errors"
	"strings"
	"testing"
)

func TestSeed(t *testing.T) {
	t.Run("standby is the first other slot", func(t *testing.T) {
		got, err := Seed("green", []string{"blue", "green", "red"})
		if err != nil {
			t.Fatal(err)
		}
		if want := (State{Active: "green", Standby: "blue"}); !got.Equal(want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("unknown active slot is an error", func(t *testing.T) {
		_, err := Seed("purple", []string{"blue", "green"})
		if !errors.Is(err, ErrUnknownSlot) {
			t.Fatalf("got %v, want ErrUnknownSlot", err)
		}
	})
	t.Run("a single slot cannot be seeded", func(t *testing.T) {
		if _, err := Seed("blue", []string{"blue"}); err == nil {
			t.Fatal("got nil error, want one")
		}
	})
}

func isRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

func TestSwap(t *testing.T) {
	s := State{Active: "blue", Standby: "green"}
	t.Run("exchanges active and standby and remembers the previous", func(t *testing.T) {
		got, err := s.Swap(Readiness{Healthy: 2, Routable: 2}, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := (State{Active: "green", Standby: "blue", Previous: "blue"}); !got.Equal(want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("refused when standby has no routable instance", func(t *testing.T) {
		got, err := s.Swap(Readiness{}, false)
		if !isRefused(err) {
			t.Fatalf("got %v, want *RefusedError", err)
		}
		if !got.Equal(s) {
			t.Fatalf("refused swap changed state to %+v", got)
		}
	})
	t.Run("forced swap ignores health", func(t *testing.T) {
		got, err := s.Swap(Readiness{}, true)
		if err != nil || got.Active != "green" {
			t.Fatalf("got %+v, %v; want green active", got, err)
		}
	})
}

func TestRollback(t *testing.T) {
	fresh := State{Active: "blue", Standby: "green"}
	if _, err := fresh.Rollback(Readiness{Healthy: 1, Routable: 1}, false); !isRefused(err) {
		t.Fatalf("rollback before any swap: got %v, want refused", err)
	}
	swapped, _ := fresh.Swap(Readiness{Healthy: 1, Routable: 1}, false)
	back, err := swapped.Rollback(Readiness{Healthy: 1, Routable: 1}, false)
	if err != nil || back.Active != "blue" || back.Standby != "green" {
		t.Fatalf("rollback: got %+v, %v; want blue active again", back, err)
	}
	if _, err := swapped.Rollback(Readiness{Healthy: 0, Routable: 0}, false); !isRefused(err) {
		t.Fatalf("rollback to a slot with no healthy instance: got %v, want refused", err)
	}
}

func TestDrainAndReady(t *testing.T) {
	s := State{Active: "blue", Standby: "green"}
	d, err := s.Drain("blue", "127.0.0.1:2", false, false)
	if err != nil {
		t.Fatal(err)
	}
	d, _ = d.Drain("blue", "127.0.0.1:1", false, false)
	if len(s.Drained) != 0 {
		t.Fatal("Drain modified its receiver")
	}
	if !d.IsDrained("blue", "127.0.0.1:1") || !d.IsDrained("blue", "127.0.0.1:2") || d.IsDrained("green", "127.0.0.1:1") {
		t.Fatalf("drained = %v", d.Drained)
	}
	if again, _ := d.Drain("blue", "127.0.0.1:1", true, false); !again.Equal(d) {
		t.Fatal("draining a drained instance changed the state")
	}
	if _, err := s.Drain("blue", "127.0.0.1:1", true, false); !isRefused(err) {
		t.Fatalf("draining the last routable instance: got %v, want refused", err)
	}
	r := d.Ready("blue", "127.0.0.1:1")
	if r.IsDrained("blue", "127.0.0.1:1") || !r.IsDrained("blue", "127.0.0.1:2") || !d.IsDrained("blue", "127.0.0.1:1") {
		t.Fatalf("ready: got %v from %v", r.Drained, d.Drained)
	}
	if !r.Ready("blue", "127.0.0.1:9").Equal(r) {
		t.Fatal("readying an undrained instance changed the state")
	}
}

func TestCheck(t *testing.T) {
	slots := []string{"blue", "green"}
	cases := []struct {
		name string
		s    State
		ok   bool
	}{
		{"valid", State{Active: "blue", Standby: "green"}, true},
		{"unknown active", State{Active: "red", Standby: "green"}, false},
		{"unknown standby", State{Active: "blue", Standby: "red"}, false},
		{"same slot twice", State{Active: "blue", Standby: "blue"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.s.Check(slots)
			if (err == nil) != c.ok {
				t.Fatalf("Check(%+v) = %v, want ok=%v", c.s, err, c.ok)
			}
		})
	}
}

func TestFit(t *testing.T) {
	s := State{Active: "blue", Standby: "green", Previous: "red",
		Drained: []string{InstanceKey("blue", "127.0.0.1:1"), InstanceKey("blue", "127.0.0.1:2"), InstanceKey("red", "127.0.0.1:3")}}
	got := s.Fit(map[string][]string{"blue": {"127.0.0.1:2"}, "green": {"127.0.0.1:4"}})
	want := State{Active: "blue", Standby: "green", Drained: []string{InstanceKey("blue", "127.0.0.1:2")}}
	if !got.Equal(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if len(s.Drained) != 3 || s.Previous != "red" {
		t.Fatalf("Fit changed its receiver: %+v", s)
	}
	if same := want.Fit(map[string][]string{"blue": {"127.0.0.1:2"}, "green": nil}); !same.Equal(want) {
		t.Fatalf("a fitting state changed: %+v", same)
	}
}

// TestRefusalsTellHealthyFromRoutable (issue 16, point 3): a slot whose
// instances are healthy but drained is not said to have no healthy one.
func TestRefusalsTellHealthyFromRoutable(t *testing.T) {
	s := State{Active: "blue", Standby: "green"}
	_, err := s.Swap(Readiness{Healthy: 2}, false)
	if err == nil || !strings.Contains(err.Error(), `standby slot "green" has no routable instance (2 healthy, all drained`) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("got %v", err)
	}
	_, err = s.Swap(Readiness{}, false)
	if err == nil || !strings.Contains(err.Error(), "has no healthy instance (--force swaps anyway)") {
		t.Fatalf("got %v", err)
	}
}
