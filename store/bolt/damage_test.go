package bolt

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// sound writes a state file with a state and n history entries, each with
// a reason long enough that the history spans many pages.
func sound(t *testing.T, path string, n int) {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	rev, _, err := s.CompareAndSwap(ctx, 0, state.State{Active: "blue", Standby: "green"}, store.Entry{Operation: "seed", Result: store.Applied})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n - 1 {
		st := state.State{Active: "green", Standby: "blue", Previous: "blue"}
		if i%2 == 1 {
			st = state.State{Active: "blue", Standby: "green", Previous: "green"}
		}
		if rev, _, err = s.CompareAndSwap(ctx, rev, st, store.Entry{Operation: "swap", Result: store.Applied, Reason: strings.Repeat("r", 900)}); err != nil {
			t.Fatal(err)
		}
	}
}

// raw opens path with bbolt itself and runs f in a write transaction.
func raw(t *testing.T, path string, f func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(f); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// TestDamagedFilesAreRefused: every kind of damage makes Open fail with one
// line that names the file, says what is wrong and names the repair, never
// a panic or a fault, and leaves the file byte for byte as it was. Before,
// a zero-byte file was silently re-initialised, a truncated one faulted
// (SIGBUS), overwritten pages panicked, a foreign bbolt file was seeded,
// and an unreadable history entry only showed on a history read.
func TestDamagedFilesAreRefused(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"zero bytes", func(t *testing.T, path string) {
			os.WriteFile(path, nil, 0o600)
		}, "is empty (0 bytes), so which slot is active is unknown"},
		{"truncated to half", func(t *testing.T, path string) {
			sound(t, path, 200)
			info, _ := os.Stat(path)
			os.Truncate(path, info.Size()/2)
		}, "is damaged (it is truncated:"},
		{"truncated inside the first page", func(t *testing.T, path string) {
			sound(t, path, 5)
			os.Truncate(path, 100)
		}, "is damaged (it is truncated: 100 bytes where its header says"},
		{"truncated after the meta pages", func(t *testing.T, path string) {
			sound(t, path, 5)
			os.Truncate(path, 2*4096)
		}, "is damaged (it is truncated"},
		{"random garbage", func(t *testing.T, path string) {
			b := make([]byte, 64<<10)
			g := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(g.Uint32())
			}
			os.WriteFile(path, b, 0o600)
		}, "is damaged (no valid bbolt header"},
		{"garbage pages behind a valid header", func(t *testing.T, path string) {
			sound(t, path, 200)
			data, _ := os.ReadFile(path)
			g := rand.New(rand.NewPCG(3, 4))
			for i := 2 * 4096; i < len(data); i++ {
				data[i] = byte(g.Uint32())
			}
			os.WriteFile(path, data, 0o600)
		}, "is damaged (unreadable page"},
		{"a valid bbolt file of someone else's", func(t *testing.T, path string) {
			raw(t, path, func(tx *bbolt.Tx) error {
				b, err := tx.CreateBucket([]byte("users"))
				if err != nil {
					return err
				}
				return b.Put([]byte("alice"), []byte("admin"))
			})
		}, `is not a vipswap state file (it holds bucket "users"): point state.path at another file`},
		{"an unreadable state", func(t *testing.T, path string) {
			sound(t, path, 3)
			raw(t, path, func(tx *bbolt.Tx) error { return tx.Bucket(stateBucket).Put(currentKey, []byte("{\"revision\":")) })
		}, "is damaged (the stored state is unreadable"},
		{"a state naming no slot", func(t *testing.T, path string) {
			sound(t, path, 3)
			raw(t, path, func(tx *bbolt.Tx) error {
				return tx.Bucket(stateBucket).Put(currentKey, []byte(`{"revision":3,"state":{}}`))
			})
		}, "no active or standby slot"},
		{"history without a state", func(t *testing.T, path string) {
			sound(t, path, 3)
			raw(t, path, func(tx *bbolt.Tx) error { return tx.DeleteBucket(stateBucket) })
		}, "the stored state is missing although the history has 3 entries"},
		{"an unreadable history entry", func(t *testing.T, path string) {
			sound(t, path, 3)
			raw(t, path, func(tx *bbolt.Tx) error { return tx.Bucket(historyBucket).Put(key(2), []byte("\x00garbage")) })
		}, "is damaged (history entry 2 is unreadable"},
		{"a history entry under another ID", func(t *testing.T, path string) {
			sound(t, path, 3)
			raw(t, path, func(tx *bbolt.Tx) error {
				return tx.Bucket(historyBucket).Put(key(2), []byte(`{"id":7,"operation":"swap","result":"applied"}`))
			})
		}, "history entry 2 says it is entry 7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			c.damage(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Open(path)
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted the file")
			}
			msg := err.Error()
			var damaged *DamagedError
			if !errors.As(err, &damaged) || !strings.Contains(msg, "state file "+path+" ") || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("got %q, want one line naming %s and containing %q", msg, path, c.want)
			}
			if !damaged.Foreign && !strings.Contains(msg, "vipswap state repair") {
				t.Fatalf("%q does not name the repair", msg)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Fatal("the damaged file was changed")
			}
			if r, err := Check(path); err == nil || len(r.Problems) == 0 {
				t.Fatalf("Check: %+v, %v; want the problems", r, err)
			}
		})
	}
}

// TestHistoryReadErrors: an entry damaged while the file is open makes
// history reads return an error naming the file and the entry, instead of
// dropping the caller; the state still loads.
func TestHistoryReadErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	sound(t, path, 4)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(historyBucket).Put(key(3), []byte("{")) }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := "state file " + path + ": history entry 3 is unreadable"
	if _, err := s.History(ctx, 0); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("History: %v, want %q", err, want)
	}
	if _, err := s.HistoryBefore(ctx, 4, 5); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("HistoryBefore: %v, want %q", err, want)
	}
	if _, err := s.Entry(ctx, 3); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Entry: %v, want %q", err, want)
	}
	if h, err := s.History(ctx, 1); err != nil || len(h) != 1 || h[0].ID != 4 {
		t.Errorf("the newest entry alone: %+v, %v", h, err)
	}
	if _, rev, err := s.Load(ctx); err != nil || rev != 4 {
		t.Errorf("Load: revision %d, %v; want 4", rev, err)
	}
}

// TestCreated: a new file is created whole (no zero-byte or temporary file
// is left) and reported as created; a file with a state is not; a file
// that a run created but never seeded counts as new.
func TestCreated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Created() {
		t.Fatal("a new file is not reported as created")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the directory holds %d files after creating one: %v", len(entries), entries)
	}
	s.Close()
	if s, err = Open(path); err != nil || !s.Created() {
		t.Fatalf("a file created but never seeded: %v, created %v; want it treated as new", err, s != nil && s.Created())
	}
	if _, _, err := s.CompareAndSwap(context.Background(), 0, state.State{Active: "blue", Standby: "green"}, store.Entry{Operation: "seed"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil || s.Created() {
		t.Fatalf("a seeded file: %v, created %v; want it not created", err, s != nil && s.Created())
	}
	s.Close()
}
