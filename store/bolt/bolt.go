// Package bolt is the default store: one bbolt file on local disk. One change
// is one bbolt transaction that writes the state and its history entry, so a
// crash at any point leaves either the old or the new state, never a mix.
package bolt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

var (
	stateBucket   = []byte("vipswap")
	historyBucket = []byte("history")
	currentKey    = []byte("state")
	// secretsBucket holds the secrets (store.Secrets), apart from the
	// state and the history: a dump leaves them out.
	secretsBucket = []byte("secrets")
)

// record is the stored form of the current state.
type record struct {
	Revision store.Revision `json:"revision"`
	State    state.State    `json:"state"`
}

// Store is a store.Store backed by a bbolt file.
type Store struct {
	dbMu    sync.RWMutex // guards db: Release and Reacquire replace it
	db      *bbolt.DB    // nil while released
	path    string
	keep    store.Retention
	created bool

	mu       sync.Mutex // guards watchers and closed
	watchers map[chan store.Event]struct{}
	closed   bool
}

var _ store.Store = (*Store)(nil)

// Options configures a Store. The zero value keeps every history entry.
type Options struct {
	// Retention bounds the history; entries beyond it are removed in the
	// transaction that appends a new one.
	Retention store.Retention
}

// Open opens (creating if needed) the state file at path, keeping every
// history entry. See OpenWith.
func Open(path string) (*Store, error) { return OpenWith(path, Options{}) }

// OpenWith opens the state file at path, or creates it when there is no
// file at all. It refuses, with a one-line *DamagedError naming the file
// and the repair, a file that is empty, damaged or not vipswap's, after
// reading all of it (Check): such a file is never overwritten, and damage
// never crashes the process. It fails after a second when another process
// holds the file. A new file is created whole under a temporary name and
// then linked into place, so a crash never leaves an empty state file.
func OpenWith(path string, opts Options) (*Store, error) {
	found, err := exists(path)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if found {
		if _, err := Check(path); err != nil {
			return nil, err
		}
	} else if err := create(path); err != nil {
		return nil, err
	}
	var db *bbolt.DB
	err = guarded(func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
		return err
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, lockedError(path)
	case err != nil:
		return nil, &DamagedError{Path: path, Problem: err.Error()}
	}
	s := &Store{db: db, path: path, keep: opts.Retention, watchers: make(map[chan store.Event]struct{})}
	if _, _, err := s.Load(context.Background()); errors.Is(err, store.ErrNotFound) {
		s.created = true
	} else if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Created reports that the file held no state when it was opened: Open
// created it, or a run that created it stopped before storing a state.
// The controller then seeds it from the configuration.
func (s *Store) Created() bool { return s.created }

// Path returns the state file's path.
func (s *Store) Path() string { return s.path }

// create makes an empty bbolt file at path: under a temporary name in the
// same directory, synced, then hard-linked into place (which fails if a
// file appeared there meanwhile) and the directory synced.
func create(path string) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".new-*")
	if err != nil {
		return fmt.Errorf("create state file %s: %w", path, err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	os.Remove(tmp.Name()) // bbolt initialises a file only when it creates it or finds it empty
	db, err := bbolt.Open(tmp.Name(), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("create state file %s: %w", path, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("create state file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create state file %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a directory entry just created or renamed in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context) (state.State, store.Revision, error) {
	var rec record
	err := s.view(func(tx *bbolt.Tx) error {
		r, err := s.read(tx)
		rec = r
		return err
	})
	return rec.State, rec.Revision, err
}

// view runs a read transaction, guarded: a page damaged since Open is an
// error for the caller, not a panic in its goroutine.
func (s *Store) view(f func(*bbolt.Tx) error) error {
	err := guarded(func() error { return s.withDB(func(db *bbolt.DB) error { return db.View(f) }) })
	if err != nil && !errors.Is(err, store.ErrNotFound) && !strings.Contains(err.Error(), s.path) {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	return err
}

// read decodes the current record.
func (s *Store) read(tx *bbolt.Tx) (record, error) {
	b := tx.Bucket(stateBucket)
	if b == nil {
		return record{}, store.ErrNotFound
	}
	raw := b.Get(currentKey)
	if raw == nil {
		return record{}, store.ErrNotFound
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return record{}, fmt.Errorf("state file %s: stored state is unreadable: %w", s.path, err)
	}
	return rec, nil
}

// CompareAndSwap implements store.Store.
func (s *Store) CompareAndSwap(ctx context.Context, expected store.Revision, st state.State, e store.Entry) (store.Revision, store.Entry, error) {
	if err := ctx.Err(); err != nil {
		return 0, store.Entry{}, err
	}
	var next store.Revision
	err := s.updateDB(func(tx *bbolt.Tx) error {
		cur, err := s.read(tx)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if cur.Revision != expected {
			return &store.ConflictError{Expected: expected, Current: cur.Revision}
		}
		next = cur.Revision + 1
		raw, err := json.Marshal(record{Revision: next, State: st})
		if err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(stateBucket)
		if err != nil {
			return err
		}
		if err := b.Put(currentKey, raw); err != nil {
			return err
		}
		e.Revision = next
		e, err = s.appendEntry(tx, e)
		return err
	})
	if err != nil {
		return 0, store.Entry{}, s.wrap(err)
	}
	s.notify(store.Event{Revision: next, State: st})
	return next, e, nil
}

// Record implements store.Store.
func (s *Store) Record(ctx context.Context, e store.Entry) (store.Entry, error) {
	if err := ctx.Err(); err != nil {
		return store.Entry{}, err
	}
	err := s.updateDB(func(tx *bbolt.Tx) (err error) {
		e, err = s.appendEntry(tx, e)
		return err
	})
	return e, s.wrap(err)
}

// appendEntry stores e under the next sequence number, which becomes its ID,
// then prunes the history to the retention.
func (s *Store) appendEntry(tx *bbolt.Tx, e store.Entry) (store.Entry, error) {
	b, err := tx.CreateBucketIfNotExists(historyBucket)
	if err != nil {
		return e, err
	}
	if e.ID, err = b.NextSequence(); err != nil {
		return e, err
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	if err := b.Put(key(e.ID), raw); err != nil {
		return e, err
	}
	return e, s.prune(b, e.ID)
}

// prune deletes, oldest first, the entries more than s.keep.MaxEntries IDs
// below the newest (IDs are consecutive, so the newest MaxEntries are kept)
// and those older than s.keep.MaxAge, never the entry just appended. It
// stops at the first entry to keep: entries are appended in time order,
// and one whose time is unreadable is kept (Check reports it).
func (s *Store) prune(b *bbolt.Bucket, newest uint64) error {
	var cutoff time.Time
	if s.keep.MaxAge > 0 {
		cutoff = time.Now().Add(-s.keep.MaxAge)
	}
	// Collect, then delete: deleting under a cursor and starting again
	// from First re-walks emptied pages, which made a large backlog take
	// minutes. At most pruneBatch entries go per transaction; a backlog
	// (a lowered max_entries, an import) drains over the next changes.
	var doomed [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(doomed) < pruneBatch; k, v = c.Next() {
		id := binary.BigEndian.Uint64(k)
		if id >= newest {
			break
		}
		old := s.keep.MaxEntries > 0 && newest-id >= uint64(s.keep.MaxEntries)
		if !old && !cutoff.IsZero() {
			var e struct{ Time time.Time }
			old = json.Unmarshal(v, &e) == nil && e.Time.Before(cutoff)
		}
		if !old {
			break
		}
		doomed = append(doomed, slices.Clone(k))
	}
	for _, k := range doomed {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// pruneBatch bounds how many history entries one transaction prunes.
const pruneBatch = 1000

// Measure implements store.Store.
func (s *Store) Measure(ctx context.Context, id uint64, m store.Measurement) error {
	err := s.updateDB(func(tx *bbolt.Tx) error {
		e, err := s.entry(tx, id)
		if err != nil {
			return err
		}
		sum, err := e.Measurement.Add(m)
		if err != nil {
			return fmt.Errorf("history entry %d is %w", id, err)
		}
		e.Measurement = &sum
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return tx.Bucket(historyBucket).Put(key(id), raw)
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("history entry %d: %w", id, err)
	}
	return s.wrap(err)
}

// Entry implements store.Store.
func (s *Store) Entry(ctx context.Context, id uint64) (store.Entry, error) {
	var e store.Entry
	err := s.view(func(tx *bbolt.Tx) (err error) {
		e, err = s.entry(tx, id)
		return err
	})
	return e, err
}

// entry decodes the history entry with the given ID.
func (s *Store) entry(tx *bbolt.Tx, id uint64) (store.Entry, error) {
	var e store.Entry
	b := tx.Bucket(historyBucket)
	if b == nil {
		return e, store.ErrNotFound
	}
	raw := b.Get(key(id))
	if raw == nil {
		return e, store.ErrNotFound
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, fmt.Errorf("state file %s: history entry %d is unreadable: %w", s.path, id, err)
	}
	return e, nil
}

// History implements store.Store.
func (s *Store) History(ctx context.Context, limit int) ([]store.Entry, error) {
	return s.HistoryBefore(ctx, 0, limit)
}

// HistoryBefore implements store.Store.
func (s *Store) HistoryBefore(ctx context.Context, before uint64, limit int) ([]store.Entry, error) {
	var out []store.Entry
	err := s.view(func(tx *bbolt.Tx) error {
		b := tx.Bucket(historyBucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.Last()
		if before > 0 {
			// Seek finds before or the next entry after it; step back once.
			if k, _ = c.Seek(key(before)); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var e store.Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("state file %s: history entry %d is unreadable: %w", s.path, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) <-chan store.Event {
	ch := make(chan store.Event, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(ch)
		return ch
	}
	s.watchers[ch] = struct{}{}
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.watchers[ch]; ok {
			delete(s.watchers, ch)
			close(ch)
		}
	})
	return ch
}

// notify hands ev to every watcher, replacing an event it has not taken yet.
func (s *Store) notify(ev store.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.watchers {
		select {
		case <-ch:
		default:
		}
		ch <- ev
	}
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for ch := range s.watchers {
			delete(s.watchers, ch)
			close(ch)
		}
	}
	s.mu.Unlock()
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.db == nil {
		return nil // released and never reacquired
	}
	return s.db.Close()
}

// ErrReleased is wrapped by the error of every operation on a Store between
// Release and Reacquire.
var ErrReleased = errors.New("the state file is handed to a new vipswap process")

// withDB runs f on the open file, or fails with ErrReleased (as a
// store.UnavailableError) while it is released.
func (s *Store) withDB(f func(*bbolt.DB) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return &store.UnavailableError{Store: "state file " + s.path, Err: ErrReleased}
	}
	return f(s.db)
}

// updateDB runs a read-write transaction on the open file.
func (s *Store) updateDB(f func(*bbolt.Tx) error) error {
	return s.withDB(func(db *bbolt.DB) error { return db.Update(f) })
}

// Release closes the file, and with it its lock, so that another process
// can open it, after the transactions under way; the Store stays usable
// and its watchers stay subscribed, but until Reacquire every operation
// fails with ErrReleased. It is how a vipswap hands its state file to the
// process that replaces it.
func (s *Store) Release() error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}

// Reacquire opens the file again after Release (waiting up to a second for
// its lock), for a process whose replacement did not take over.
func (s *Store) Reacquire() error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.db != nil {
		return nil
	}
	db, err := bbolt.Open(s.path, 0o600, &bbolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return lockedError(s.path)
	}
	if err != nil {
		return &DamagedError{Path: s.path, Problem: err.Error()}
	}
	s.db = db
	return nil
}

// wrap names the file in errors that are not decisions (conflicts and
// missing entries pass through unchanged).
func (s *Store) wrap(err error) error {
	if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
		return err
	}
	return fmt.Errorf("write state file %s: %w", s.path, err)
}

func key(id uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id)
	return b[:]
}

var _ store.Secrets = (*Store)(nil)

// UpdateSecret implements store.Secrets, in one transaction.
func (s *Store) UpdateSecret(ctx context.Context, name string, update func(cur []byte) ([]byte, error)) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []byte
	err := s.updateDB(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(secretsBucket)
		if err != nil {
			return err
		}
		cur := slices.Clone(b.Get([]byte(name)))
		next, err := update(cur)
		if err != nil {
			return err
		}
		out = next
		if string(next) == string(cur) {
			return nil
		}
		return b.Put([]byte(name), next)
	})
	return out, s.wrap(err)
}
