package state

import (
	"errors"
	"testing"
)

func TestSeed(t *testing.T) {
	t.Run("standby is the first other slot", func(t *testing.T) {
		got, err := Seed("green", []string{"blue", "green", "red"})
		if err != nil {
			t.Fatal(err)
		}
		if want := (State{Active: "green", Standby: "blue"}); got != want {
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

func TestSwap(t *testing.T) {
	s := State{Active: "blue", Standby: "green"}
	t.Run("exchanges active and standby", func(t *testing.T) {
		got, err := s.Swap(2, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := (State{Active: "green", Standby: "blue"}); got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
	t.Run("refused when standby has no healthy instance", func(t *testing.T) {
		got, err := s.Swap(0, false)
		var refused *RefusedError
		if !errors.As(err, &refused) {
			t.Fatalf("got %v, want *RefusedError", err)
		}
		if got != s {
			t.Fatalf("refused swap changed state to %+v", got)
		}
	})
	t.Run("forced swap ignores health", func(t *testing.T) {
		got, err := s.Swap(0, true)
		if err != nil || got.Active != "green" {
			t.Fatalf("got %+v, %v; want green active", got, err)
		}
	})
}

func TestCheck(t *testing.T) {
	slots := []string{"blue", "green"}
	cases := []struct {
		name string
		s    State
		ok   bool
	}{
		{"valid", State{"blue", "green"}, true},
		{"unknown active", State{"red", "green"}, false},
		{"unknown standby", State{"blue", "red"}, false},
		{"same slot twice", State{"blue", "blue"}, false},
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
