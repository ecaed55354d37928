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
)

// record is the stored form of the current state.
type record struct {
	Revision store.Revision `json:"revision"`
	State    state.State    `json:"state"`
}

// Store is a store.Store backed by a bbolt file.
type Store struct {
	db   *bbolt.DB
	path string

	mu       sync.Mutex // guards watchers and closed
	watchers map[chan store.Event]struct{}
	closed   bool
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the state file at path. It fails after a
// second when another process holds the file, and with a message naming the
// file when it is not a valid state file; it never overwrites such a file.
func Open(path string) (*Store, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("state file %s is locked by another vipswap process", path)
		}
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	s := &Store{db: db, path: path, watchers: make(map[chan store.Event]struct{})}
	if _, _, err := s.Load(context.Background()); err != nil && !errors.Is(err, store.ErrNotFound) {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context) (state.State, store.Revision, error) {
	var rec record
	err := s.db.View(func(tx *bbolt.Tx) error {
		r, err := s.read(tx)
		rec = r
		return err
	})
	return rec.State, rec.Revision, err
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
	err := s.db.Update(func(tx *bbolt.Tx) error {
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
		e, err = appendEntry(tx, e)
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
	err := s.db.Update(func(tx *bbolt.Tx) (err error) {
		e, err = appendEntry(tx, e)
		return err
	})
	return e, s.wrap(err)
}

// appendEntry stores e under the next sequence number, which becomes its ID.
func appendEntry(tx *bbolt.Tx, e store.Entry) (store.Entry, error) {
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
	return e, b.Put(key(e.ID), raw)
}

// Measure implements store.Store.
func (s *Store) Measure(ctx context.Context, id uint64, m store.Measurement) error {
	err := s.db.Update(func(tx *bbolt.Tx) error {
		e, err := s.entry(tx, id)
		if err != nil {
			return err
		}
		if e.Measurement != nil {
			return fmt.Errorf("history entry %d is already measured", id)
		}
		e.Measurement = &m
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
	err := s.db.View(func(tx *bbolt.Tx) (err error) {
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
	var out []store.Entry
	err := s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(historyBucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
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
	return s.db.Close()
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
