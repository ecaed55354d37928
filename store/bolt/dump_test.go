package bolt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

func TestExportImport(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "state.db")
	sound(t, src, 30)
	d, err := Export(src)
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != store.DumpFormat || d.Revision != 30 || d.State == nil || d.State.Active != "green" || len(d.History) != 30 || d.History[0].ID != 1 {
		t.Fatalf("export: format %q revision %d state %+v, %d entries", d.Format, d.Revision, d.State, len(d.History))
	}
	// A release that stopped at a step is in the history as "failed": a
	// dump holding one imports.
	d.History[29].Operation, d.History[29].Result = "deploy", store.Failed
	dst := filepath.Join(dir, "copy.db")
	if err := Import(dst, d); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	st, rev, err := s.Load(ctx)
	h, _ := s.History(ctx, 0)
	if err != nil || !st.Equal(*d.State) || rev != 30 || len(h) != 30 || s.Created() {
		t.Fatalf("imported: %+v@%d, %v, %d entries", st, rev, err, len(h))
	}
	// New entries continue the IDs.
	if e, err := s.Record(ctx, store.Entry{Operation: "swap", Result: store.Refused}); err != nil || e.ID != 31 {
		t.Fatalf("next entry %d, %v; want 31", e.ID, err)
	}

	if err := Import(dst, d); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("import over an existing file: %v", err)
	}
	bad := func(edit func(d *store.Dump)) store.Dump {
		c := d
		c.History = append([]store.Entry(nil), d.History...)
		st := *d.State
		c.State = &st
		edit(&c)
		return c
	}
	for name, c := range map[string]struct {
		d    store.Dump
		want string
	}{
		"format":            {bad(func(d *store.Dump) { d.Format = "v2" }), `unknown format "v2"`},
		"no state":          {bad(func(d *store.Dump) { d.State = nil }), "holds no state"},
		"same slots":        {bad(func(d *store.Dump) { d.State.Standby = d.State.Active }), "two different slots"},
		"no revision":       {bad(func(d *store.Dump) { d.Revision = 0 }), "no revision"},
		"ids out of ord":    {bad(func(d *store.Dump) { d.History[3].ID = 2 }), "history[3]: id 2 does not follow id 3"},
		"result":            {bad(func(d *store.Dump) { d.History[0].Result = "maybe" }), `result "maybe" is not applied, refused or failed`},
		"future entry":      {bad(func(d *store.Dump) { d.History[5].Revision = 99 }), "revision 99 is later"},
		"weights over":      {bad(func(d *store.Dump) { d.State.Weights = map[string]int{d.State.Active: 1100, d.State.Standby: -100} }), "want 1 to 1000"},
		"weights elsewhere": {bad(func(d *store.Dump) { d.State.Weights = map[string]int{d.State.Standby: 1000} }), "no share"},
		"rollout step": {bad(func(d *store.Dump) {
			d.State.Rollout = &state.Rollout{To: d.State.Standby, Step: 7, Steps: []state.Step{{PerMille: 1000}}}
		}), "step 7 of 1 steps"},
		"rollout empty": {bad(func(d *store.Dump) { d.State.Rollout = &state.Rollout{To: d.State.Standby} }), "must end at 100%"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".db")
		if err := Import(path, c.d); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s: a refused import left a file", name)
		}
	}
}

// TestRepair: each kind of damage is repaired into a file vipswap opens,
// keeping what was readable, recording the repair, and keeping the damaged
// file aside unchanged.
func TestRepair(t *testing.T) {
	green := &state.State{Active: "green", Standby: "blue"}
	cases := []struct {
		name     string
		damage   func(t *testing.T, path string)
		rebuild  *state.State
		active   string
		salvaged func(n int) bool
	}{
		{"an unreadable history entry", func(t *testing.T, path string) {
			sound(t, path, 10)
			raw(t, path, func(tx *bbolt.Tx) error { return tx.Bucket(historyBucket).Put(key(4), []byte("{")) })
		}, nil, "green", func(n int) bool { return n == 9 }},
		{"truncated", func(t *testing.T, path string) {
			sound(t, path, 200)
			h, _ := inspect(path)
			os.Truncate(path, int64(h.meta.pgid)*int64(h.meta.pageSize)*3/4)
		}, nil, "", func(n int) bool { return n > 0 && n < 200 }},
		{"zero bytes", func(t *testing.T, path string) { os.WriteFile(path, nil, 0o600) }, green, "green", func(n int) bool { return n == 0 }},
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 8192), 0o600)
		}, green, "green", func(n int) bool { return n == 0 }},
	}
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			c.damage(t, path)
			before, _ := os.ReadFile(path)
			if c.rebuild != nil {
				if _, err := Repair(path, nil, now); !errors.Is(err, ErrNoState) {
					t.Fatalf("without a state to rebuild: %v, want ErrNoState", err)
				}
			}
			r, err := Repair(path, c.rebuild, now)
			if err != nil {
				t.Fatal(err)
			}
			if !c.salvaged(r.Salvaged) || len(r.Problems) == 0 {
				t.Fatalf("repaired %+v", r)
			}
			if aside, _ := os.ReadFile(r.Aside); !bytes.Equal(aside, before) || !strings.HasPrefix(r.Aside, path+".damaged-20261122T100000Z") {
				t.Fatalf("the damaged file is not kept aside unchanged at %s", r.Aside)
			}
			s, err := Open(path)
			if err != nil {
				t.Fatalf("the repaired file does not open: %v", err)
			}
			defer s.Close()
			ctx := context.Background()
			st, rev, err := s.Load(ctx)
			if err != nil || rev != r.Revision || (c.active != "" && st.Active != c.active) {
				t.Fatalf("repaired state %+v@%d, %v; want active %s at %d", st, rev, err, c.active, r.Revision)
			}
			h, err := s.History(ctx, 0)
			if err != nil || len(h) != r.Salvaged+1 || h[0].Operation != "repair" || h[0].Revision != rev || !strings.Contains(h[0].Reason, "vipswap state repair") {
				t.Fatalf("history after repair: %d entries, newest %+v, %v", len(h), h, err)
			}
		})
	}

	t.Run("sound and foreign files are left alone", func(t *testing.T) {
		dir := t.TempDir()
		ok := filepath.Join(dir, "ok.db")
		sound(t, ok, 3)
		if _, err := Repair(ok, nil, now); err == nil || !strings.Contains(err.Error(), "nothing to repair") {
			t.Fatalf("repairing a sound file: %v", err)
		}
		foreign := filepath.Join(dir, "foreign.db")
		raw(t, foreign, func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("users")); return err })
		if _, err := Repair(foreign, green, now); err == nil || !strings.Contains(err.Error(), "not a vipswap state file") {
			t.Fatalf("repairing a foreign file: %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 2 {
			t.Fatalf("refused repairs left files: %v", entries)
		}
	})
}
