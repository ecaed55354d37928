package bolt

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Export returns the whole content of the sound state file at path. A
// damaged file is refused (Repair salvages it).
func Export(path string) (store.Dump, error) {
	if _, err := Check(path); err != nil {
		return store.Dump{}, err
	}
	var c contents
	if err := withReadOnly(path, func(tx *bbolt.Tx) error { c = walk(tx, false); return nil }); err != nil {
		return store.Dump{}, err
	}
	return dumpOf(c), nil
}

func dumpOf(c contents) store.Dump {
	d := store.Dump{Format: store.DumpFormat, History: c.entries}
	if c.rec != nil {
		st := c.rec.State
		d.State, d.Revision = &st, c.rec.Revision
	}
	if d.History == nil {
		d.History = []store.Entry{}
	}
	return d
}

// Import creates a new state file at path holding d; it never replaces an
// existing file. The file is written whole under a temporary name and
// linked into place.
func Import(path string, d store.Dump) error {
	if err := d.Check(); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	found, err := exists(path)
	if err != nil {
		return err
	}
	if found {
		return fmt.Errorf("import: %s already exists; import into a new file", path)
	}
	tmp, err := write(path, d)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// write stores d in a new file next to path and returns its name.
func write(path string, d store.Dump) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	f.Close()
	os.Remove(name) // bbolt initialises only a file it creates
	db, err := bbolt.Open(name, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return "", err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		sb, err := tx.CreateBucket(stateBucket)
		if err != nil {
			return err
		}
		raw, err := json.Marshal(record{Revision: d.Revision, State: *d.State})
		if err != nil {
			return err
		}
		if err := sb.Put(currentKey, raw); err != nil {
			return err
		}
		hb, err := tx.CreateBucket(historyBucket)
		if err != nil {
			return err
		}
		for _, e := range d.History {
			raw, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := hb.Put(key(e.ID), raw); err != nil {
				return err
			}
		}
		if n := len(d.History); n > 0 {
			return hb.SetSequence(d.History[n-1].ID)
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// Repaired is what Repair did.
type Repaired struct {
	// Aside is where the damaged file now is.
	Aside string
	// Revision and State are the state of the repaired file.
	Revision store.Revision
	State    state.State
	// Salvaged counts the history entries carried over.
	Salvaged int
	// Rebuilt reports that the stored state was unreadable and the
	// caller's was used.
	Rebuilt bool
	// Problems are what Check found.
	Problems []string
}

// ErrNoState is returned by Repair when no state could be read from the
// file and the caller gave none.
var ErrNoState = errors.New("no readable state")

// Repair salvages what is readable from the damaged state file at path
// into a new file that takes its place; the damaged file is kept next to
// it as path.damaged-TIME. It reads a copy, never the file itself, and pads
// a truncated copy to the length its header gives, so that bbolt can read
// the pages that are left. When the stored state is unreadable, rebuild is
// used (and ErrNoState returned when it is nil). A "repair" entry records
// what was done. A sound file is left alone.
func Repair(path string, rebuild *state.State, now time.Time) (Repaired, error) {
	var r Repaired
	report, err := Check(path)
	r.Problems = report.Problems
	var damaged *DamagedError
	switch {
	case err == nil:
		return r, fmt.Errorf("state file %s is sound: nothing to repair", path)
	case !errors.As(err, &damaged):
		return r, err
	case damaged.Foreign:
		return r, err
	}
	c, err := salvage(path)
	if err != nil {
		return r, err
	}
	d := dumpOf(c)
	var lastRev store.Revision
	for _, e := range d.History {
		lastRev = max(lastRev, e.Revision)
	}
	if d.State == nil {
		if rebuild == nil {
			return r, fmt.Errorf("state file %s: %w (%d history entries salvaged)", path, ErrNoState, len(d.History))
		}
		st := *rebuild
		d.State, d.Revision, r.Rebuilt = &st, lastRev, true
	}
	// The repair is a change like any other: a new revision, and an entry
	// that says what happened.
	d.Revision = max(d.Revision, lastRev) + 1
	nextID := c.sequence + 1
	if n := len(d.History); n > 0 {
		nextID = max(nextID, d.History[n-1].ID+1)
	}
	reason := fmt.Sprintf("vipswap state repair: %s; %d history entries salvaged", damaged.Problem, len(d.History))
	if r.Rebuilt {
		reason += "; state rebuilt by the operator"
	}
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	d.History = append(d.History, store.Entry{
		ID: nextID, Time: now.UTC(), Actor: "local", Operation: "repair", To: d.State.Active,
		Reason: reason, Result: store.Applied, Revision: d.Revision,
	})
	if err := d.Check(); err != nil {
		return r, fmt.Errorf("repair %s: the salvaged content is inconsistent: %w", path, err)
	}
	tmp, err := write(path, d)
	if err != nil {
		return r, fmt.Errorf("repair %s: %w", path, err)
	}
	defer os.Remove(tmp)
	base := fmt.Sprintf("%s.damaged-%s", path, now.UTC().Format("20060102T150405Z"))
	r.Aside = base
	for n := 2; ; n++ { // a second repair within the same second keeps both
		err := os.Link(path, r.Aside)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || n > 100 {
			return r, fmt.Errorf("repair %s: keep the damaged file aside: %w", path, err)
		}
		r.Aside = fmt.Sprintf("%s-%d", base, n)
	}
	if err := os.Rename(tmp, path); err != nil {
		return r, fmt.Errorf("repair %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return r, err
	}
	r.Revision, r.State, r.Salvaged = d.Revision, *d.State, len(d.History)-1
	return r, nil
}

// salvage reads what it can of the state file at path from a copy.
func salvage(path string) (contents, error) {
	h, err := inspect(path)
	if err != nil {
		return contents{}, err
	}
	if h.meta.magic == 0 { // no valid header: nothing bbolt can read
		return contents{}, nil
	}
	src, err := os.Open(path)
	if err != nil {
		return contents{}, err
	}
	defer src.Close()
	cp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".salvage-*")
	if err != nil {
		return contents{}, err
	}
	defer os.Remove(cp.Name())
	_, err = io.Copy(cp, src)
	if want := int64(h.meta.pgid) * int64(h.meta.pageSize); err == nil && h.size < want {
		err = cp.Truncate(want) // zero pages where the file ends early
	}
	if cerr := cp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return contents{}, err
	}
	var c contents
	err = withReadOnly(cp.Name(), func(tx *bbolt.Tx) error { c = walk(tx, true); return nil })
	if err != nil {
		// The header is valid but the pages are not: keep nothing rather
		// than fail, the caller decides with what is left.
		return contents{}, nil
	}
	return c, nil
}
