// Package bolt is the default store: one bbolt file on local disk. One change
// is one bbolt transaction, so a crash at any point leaves either the old or
// the new state, never a mix.
package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

var (
	bucket     = []byte("vipswap")
	currentKey = []byte("state")
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
	s := &Store{db: db, path: path}
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

// read decodes the current record; the caller holds tx.
func (s *Store) read(tx *bbolt.Tx) (record, error) {
	b := tx.Bucket(bucket)
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
func (s *Store) CompareAndSwap(ctx context.Context, expected store.Revision, st state.State) (store.Revision, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
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
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put(currentKey, raw)
	})
	if err != nil {
		var conflict *store.ConflictError
		if errors.As(err, &conflict) {
			return 0, err
		}
		return 0, fmt.Errorf("write state file %s: %w", s.path, err)
	}
	return next, nil
}

// Close implements store.Store.
func (s *Store) Close() error { return s.db.Close() }
