package bolt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, r store.Retention) store.Store {
		s, err := OpenWith(filepath.Join(t.TempDir(), "state.db"), Options{Retention: r})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	want := state.State{Active: "green", Standby: "blue"}
	rev, _, err := s.CompareAndSwap(context.Background(), 0, want, store.Entry{Operation: "seed"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, gotRev, err := s.Load(context.Background())
	if err != nil || !got.Equal(want) || gotRev != rev {
		t.Fatalf("after reopen: %+v@%d, %v; want %+v@%d", got, gotRev, err, want, rev)
	}
}

func TestCorruptFileIsNamedAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	garbage := []byte(strings.Repeat("not a bbolt file ", 512))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want an error naming %s", err, path)
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(garbage) {
		t.Fatal("corrupt state file was modified")
	}
}

func TestSecondProcessFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(path)
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("got %v, want a 'locked' error", err)
	}
}
