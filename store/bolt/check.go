package bolt

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Report is what Check found in a state file.
type Report struct {
	// Path is the state file.
	Path string
	// Size is its size in bytes.
	Size int64
	// State is the stored state, nil when none is stored or it is
	// unreadable; Revision is its revision.
	State    *state.State
	Revision store.Revision
	// Entries counts the readable history entries; FirstID and LastID are
	// the oldest and newest of them.
	Entries         int
	FirstID, LastID uint64
	// Problems lists the damage found, one line each; empty when the file
	// is sound.
	Problems []string
}

// Check reads the whole state file at path without changing it: its header,
// every page reachable from its buckets, the state and every history entry.
// It returns a *DamagedError naming the first problem when the file cannot
// be used as it is; the report lists every problem found. It never panics,
// whatever the file holds.
func Check(path string) (Report, error) {
	r := Report{Path: path}
	h, err := inspect(path)
	if err != nil {
		return r, fmt.Errorf("state file %s: %w", path, err)
	}
	r.Size = h.size
	if h.problem != nil {
		r.Problems = []string{h.problem.Error()}
		return r, &DamagedError{Path: path, Problem: h.problem.Error(), Empty: errors.Is(h.problem, errEmpty)}
	}
	var c contents
	err = withReadOnly(path, func(tx *bbolt.Tx) error {
		c = walk(tx, false)
		return nil
	})
	var damaged *DamagedError
	if errors.As(err, &damaged) {
		r.Problems = []string{damaged.Problem}
	}
	if err != nil {
		return r, err
	}
	r.fill(c)
	if r.State != nil {
		if err := r.State.Validate(); err != nil {
			c.problems = append(c.problems, "the state is not one vipswap can serve: "+err.Error())
			r.Problems = append(r.Problems, c.problems[len(c.problems)-1])
		}
	}
	switch {
	case len(c.foreign) > 0:
		return r, &DamagedError{Path: path, Problem: fmt.Sprintf("it holds bucket %q", c.foreign[0]), Foreign: true}
	case len(c.problems) > 0:
		return r, &DamagedError{Path: path, Problem: c.problems[0]}
	}
	return r, nil
}

func (r *Report) fill(c contents) {
	if c.rec != nil {
		r.State, r.Revision = &c.rec.State, c.rec.Revision
	}
	r.Entries = len(c.entries)
	if r.Entries > 0 {
		r.FirstID, r.LastID = c.entries[0].ID, c.entries[r.Entries-1].ID
	}
	for _, f := range c.foreign {
		r.Problems = append(r.Problems, fmt.Sprintf("bucket %q is not vipswap's", f))
	}
	r.Problems = append(r.Problems, c.problems...)
}

// withReadOnly opens path read-only (waiting at most a second for another
// process's lock) and runs f in a read transaction, guarded: damage is an
// error, never a crash.
func withReadOnly(path string, f func(*bbolt.Tx) error) error {
	var db *bbolt.DB
	err := guarded(func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
		return err
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return lockedError(path)
	case err != nil:
		return &DamagedError{Path: path, Problem: err.Error()}
	}
	defer db.Close()
	err = guarded(func() error { return db.View(f) })
	if err != nil {
		return &DamagedError{Path: path, Problem: err.Error()}
	}
	return nil
}

func lockedError(path string) error {
	return fmt.Errorf("state file %s is locked by another vipswap process", path)
}

// contents is what walk read from a state file.
type contents struct {
	rec      *record       // nil: no state stored, or unreadable
	entries  []store.Entry // readable history entries, by ascending ID
	sequence uint64        // the history's last assigned ID
	buckets  int           // top-level buckets
	foreign  []string      // top-level buckets that are not vipswap's
	problems []string      // damage, one line each
}

// maxProblems bounds the problems a walk lists; the first says enough.
const maxProblems = 20

func (c *contents) problem(format string, args ...any) {
	if len(c.problems) < maxProblems {
		c.problems = append(c.problems, fmt.Sprintf(format, args...))
	}
}

// walk reads everything in tx. Each part runs guarded, so damage in one
// (a bad page in the history) does not hide the others (the state). With
// salvage, a history whose walk from the oldest entry breaks off is also
// walked from the newest, to save the entries on both sides of the damage.
func walk(tx *bbolt.Tx, salvage bool) contents {
	var c contents
	err := guarded(func() error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			c.buckets++
			if !bytes.Equal(name, stateBucket) && !bytes.Equal(name, historyBucket) && !bytes.Equal(name, secretsBucket) {
				c.foreign = append(c.foreign, string(name))
			}
			return nil
		})
	})
	if err != nil {
		c.problem("the list of buckets is unreadable: %v", err)
	}
	if err := guarded(func() error { return c.readState(tx) }); err != nil {
		c.problem("the stored state is unreadable: %v", err)
	}
	c.readHistory(tx, salvage)
	if c.rec == nil && len(c.entries) > 0 && len(c.problems) == 0 {
		c.problem("the stored state is missing although the history has %d entries", len(c.entries))
	}
	return c
}

func (c *contents) readState(tx *bbolt.Tx) error {
	b := tx.Bucket(stateBucket)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		if !bytes.Equal(k, currentKey) {
			c.foreign = append(c.foreign, string(stateBucket)+"/"+string(k))
			return nil
		}
		var rec record
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		if rec.State.Active == "" || rec.State.Standby == "" || rec.Revision == 0 {
			return fmt.Errorf("it names no active or standby slot, or no revision")
		}
		c.rec = &rec
		return nil
	})
}

func (c *contents) readHistory(tx *bbolt.Tx, salvage bool) {
	b := tx.Bucket(historyBucket)
	if b == nil {
		return
	}
	c.sequence = b.Sequence()
	seen := make(map[uint64]bool)
	read := func(k, v []byte) {
		if len(k) != 8 {
			c.problem("the history holds a key that is not an entry ID (%x)", k)
			return
		}
		id := binary.BigEndian.Uint64(k)
		var e store.Entry
		if err := json.Unmarshal(v, &e); err != nil {
			c.problem("history entry %d is unreadable: %v", id, err)
			return
		}
		if e.ID != id {
			c.problem("history entry %d says it is entry %d", id, e.ID)
			return
		}
		if !seen[id] {
			seen[id] = true
			c.entries = append(c.entries, e)
		}
	}
	var last []byte // the last key the forward walk reached
	err := guarded(func() error {
		cur := b.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			last = slices.Clone(k)
			read(k, v)
		}
		return nil
	})
	if err != nil {
		after := "the first entry"
		if len(last) == 8 {
			after = fmt.Sprintf("entry %d", binary.BigEndian.Uint64(last))
		}
		c.problem("the history is unreadable after %s: %v", after, err)
		if salvage {
			guarded(func() error {
				cur := b.Cursor()
				for k, v := cur.Last(); k != nil && (last == nil || bytes.Compare(k, last) > 0); k, v = cur.Prev() {
					read(k, v)
				}
				return nil
			})
		}
	}
	slices.SortFunc(c.entries, func(a, b store.Entry) int { return cmp.Compare(a.ID, b.ID) })
	if n := len(c.entries); n > 0 {
		c.sequence = max(c.sequence, c.entries[n-1].ID)
	}
}

// exists reports whether path names an existing file.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
