package bolt

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// A released file is another process's to open (here another Store, as
// bbolt's lock is per open file); the released Store refuses every
// operation as unavailable, and after Reacquire sees what the other wrote.
func TestReleaseHandsTheFileOver(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	old, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := Open(path); err == nil {
		t.Fatal("a second Open of a held file succeeded")
	}
	if err := old.Release(); err != nil {
		t.Fatal(err)
	}
	if err := old.Release(); err != nil { // twice is harmless
		t.Fatal(err)
	}
	if _, _, err := old.Load(ctx); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, ErrReleased) {
		t.Fatalf("Load on a released store: %v, want unavailable (released)", err)
	}
	if _, err := old.Record(ctx, store.Entry{Operation: "x"}); !errors.Is(err, ErrReleased) {
		t.Fatalf("Record on a released store: %v", err)
	}
	next, err := Open(path)
	if err != nil {
		t.Fatalf("the released file does not open: %v", err)
	}
	if err := old.Reacquire(); err == nil {
		t.Fatal("Reacquire succeeded while another holds the file")
	}
	want := state.State{Active: "green", Standby: "blue"}
	if _, _, err := next.CompareAndSwap(ctx, 0, want, store.Entry{Operation: "seed"}); err != nil {
		t.Fatal(err)
	}
	next.Close()
	if err := old.Reacquire(); err != nil {
		t.Fatal(err)
	}
	got, _, err := old.Load(ctx)
	if err != nil || got.Active != "green" {
		t.Fatalf("after Reacquire: %+v, %v", got, err)
	}
}

// Closing a released store is not an error.
func TestCloseReleased(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
