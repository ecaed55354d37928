// Package etcd is the store for several vipswap nodes: the state and its
// history under one key prefix of an etcd v3 cluster. A change is one etcd
// transaction that compares the state key's mod revision (the state's
// revision) and the history counter's, then writes the state, the counter,
// the new history entry and the pruning of old ones together.
//
// Keys, under Prefix:
//
//	state          the state as JSON; its mod revision is the state's revision
//	seq            the last history ID given out, in decimal
//	history/ID     one history entry as JSON, ID zero-padded to 20 digits
//
// Every read is of the current revision, so etcd's compaction never makes
// one fail.
package etcd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Options configures a Store.
type Options struct {
	// Endpoints are the etcd client URLs.
	Endpoints []string
	// Prefix is the key prefix everything is stored under, such as
	// "/vipswap/". Several vipswap clusters may share one etcd with
	// different prefixes.
	Prefix string
	// DialTimeout bounds connecting. Default 5s.
	DialTimeout time.Duration
	// RequestTimeout bounds every read and write, so an unreachable etcd
	// is an error soon, not a hang. Default 2s.
	RequestTimeout time.Duration
	// TLS, if set, is used to reach etcd.
	TLS *tls.Config
	// Username and Password authenticate to etcd when Username is set.
	Username, Password string
	// Retention bounds the history.
	Retention store.Retention
	// LocalCopy, if set, is a file where the store keeps the last state it
	// read or wrote, for LastSeen.
	LocalCopy string
}

// Store is a store.Store on etcd. Its Watch sees changes committed by any
// node.
type Store struct {
	cli  *clientv3.Client
	opts Options

	mu      sync.Mutex // guards cancels, closed and copied
	cancels map[*byte]context.CancelFunc
	copied  store.Revision // the revision in the local copy
	closed  bool
	wg      sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open returns a Store using etcd at opts.Endpoints. It does not wait for
// etcd: an unreachable cluster makes each call fail after RequestTimeout,
// with an error that wraps store.ErrUnavailable.
func Open(opts Options) (*Store, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 2 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            opts.Endpoints,
		DialTimeout:          opts.DialTimeout,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		TLS:                  opts.TLS,
		Username:             opts.Username,
		Password:             opts.Password,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	return &Store{cli: cli, opts: opts, cancels: make(map[*byte]context.CancelFunc)}, nil
}

// Client returns the etcd client, for leases and elections beside the
// store (the same connection).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.opts.Prefix }

// Describe names the store in messages: "etcd http://127.0.0.1:2379 /vipswap/".
func (s *Store) Describe() string {
	return "etcd " + strings.Join(s.opts.Endpoints, ",") + " " + s.opts.Prefix
}

func (s *Store) stateKey() string { return s.opts.Prefix + "state" }
func (s *Store) seqKey() string   { return s.opts.Prefix + "seq" }
func (s *Store) histKey(id uint64) string {
	return fmt.Sprintf("%shistory/%020d", s.opts.Prefix, id)
}
func (s *Store) histPrefix() string { return s.opts.Prefix + "history/" }

// call runs f with the request timeout and names the store in its error:
// one that is not etcd's answer (a timeout, no connection) wraps
// store.ErrUnavailable.
func (s *Store) call(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	err := f(ctx)
	if err == nil || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) || errors.As(err, new(*decidedError)) {
		return err
	}
	if ctx.Err() != nil || isUnavailable(err) {
		return &store.UnavailableError{Store: s.Describe(), Err: err}
	}
	return fmt.Errorf("%s: %w", s.Describe(), err)
}

// decidedError is an answer etcd gave that vipswap refuses (a damaged
// key, a second measurement), not a failure to reach etcd.
type decidedError struct{ msg string }

func (e *decidedError) Error() string { return e.msg }

// decided returns a *decidedError.
func decided(format string, args ...any) error {
	return &decidedError{msg: fmt.Sprintf(format, args...)}
}

func isUnavailable(err error) bool {
	msg := err.Error()
	for _, m := range []string{"Unavailable", "DeadlineExceeded", "connection refused", "context deadline", "no leader", "transport is closing"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// Load implements store.Store.
func (s *Store) Load(ctx context.Context) (st state.State, rev store.Revision, err error) {
	err = s.call(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.stateKey())
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return store.ErrNotFound
		}
		st, err = s.decodeState(resp.Kvs[0].Value)
		rev = store.Revision(resp.Kvs[0].ModRevision)
		return err
	})
	return st, rev, err
}

// localCopy is the local copy's content.
type localCopy struct {
	Store    string         `json:"store"`
	Revision store.Revision `json:"revision"`
	State    state.State    `json:"state"`
	Saved    time.Time      `json:"saved"`
}

// Keep writes st at rev to the local copy, if there is one, unless it
// holds that revision already. The controller calls it with each state it
// puts in force (never one it refused). A failure is not the caller's: the
// copy is a fallback; LastSeen then returns the one before.
func (s *Store) Keep(st state.State, rev store.Revision) {
	if s.opts.LocalCopy == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev == s.copied {
		return
	}
	raw, err := json.MarshalIndent(localCopy{Store: s.Describe(), Revision: rev, State: st, Saved: time.Now().UTC()}, "", "  ")
	if err != nil {
		return
	}
	tmp := s.opts.LocalCopy + ".new"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return
	}
	if os.Rename(tmp, s.opts.LocalCopy) == nil {
		s.copied = rev
	}
}

// LastSeen returns the state in the local copy: the last one this node
// read or wrote, when it was saved, and which store it came from.
func (s *Store) LastSeen() (state.State, store.Revision, time.Time, error) {
	if s.opts.LocalCopy == "" {
		return state.State{}, 0, time.Time{}, errors.New("no local copy is kept")
	}
	raw, err := os.ReadFile(s.opts.LocalCopy)
	if err != nil {
		return state.State{}, 0, time.Time{}, err
	}
	var c localCopy
	if err := json.Unmarshal(raw, &c); err != nil {
		return state.State{}, 0, time.Time{}, fmt.Errorf("local copy %s: %w", s.opts.LocalCopy, err)
	}
	if c.Store != s.Describe() {
		return state.State{}, 0, time.Time{}, fmt.Errorf("local copy %s is of %s, not %s", s.opts.LocalCopy, c.Store, s.Describe())
	}
	if err := c.State.Validate(); err != nil {
		return state.State{}, 0, time.Time{}, fmt.Errorf("local copy %s: %w", s.opts.LocalCopy, err)
	}
	return c.State, c.Revision, c.Saved, nil
}

func (s *Store) decodeState(raw []byte) (state.State, error) {
	var st state.State
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, decided("key %s is unreadable (repair it with vipswap state import): %v", s.stateKey(), err)
	}
	return st, nil
}

// maxAttempts bounds the retries of a write whose only conflict was on the
// history counter (another node recorded an entry meanwhile).
const maxAttempts = 20

// CompareAndSwap implements store.Store.
func (s *Store) CompareAndSwap(ctx context.Context, expected store.Revision, st state.State, e store.Entry) (store.Revision, store.Entry, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return 0, e, err
	}
	cond := clientv3.Compare(clientv3.ModRevision(s.stateKey()), "=", int64(expected))
	if expected == 0 {
		cond = clientv3.Compare(clientv3.CreateRevision(s.stateKey()), "=", 0)
	}
	conflict := func(resp *clientv3.TxnResponse) error {
		current := store.Revision(0)
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			current = store.Revision(kvs[0].ModRevision)
		}
		if current != expected {
			return &store.ConflictError{Expected: expected, Current: current}
		}
		return nil // only the history counter moved: try again
	}
	err = s.call(ctx, func(ctx context.Context) (err error) {
		e, err = s.appendEntry(ctx, e, change{
			cmps: []clientv3.Cmp{cond}, ops: []clientv3.Op{clientv3.OpPut(s.stateKey(), string(raw))},
			elseOps: []clientv3.Op{clientv3.OpGet(s.stateKey())}, refused: conflict,
		})
		return err
	})
	if err != nil {
		return 0, store.Entry{}, err
	}
	return e.Revision, e, nil
}

// Record implements store.Store.
func (s *Store) Record(ctx context.Context, e store.Entry) (store.Entry, error) {
	err := s.call(ctx, func(ctx context.Context) (err error) {
		e, err = s.appendEntry(ctx, e, change{})
		return err
	})
	return e, err
}

// change is what a transaction that appends a history entry does besides:
// its comparisons and writes, the reads it makes when a comparison fails,
// and refused, which turns those reads into the caller's decision (nil to
// try again: only the history counter moved).
type change struct {
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	elseOps []clientv3.Op
	refused func(*clientv3.TxnResponse) error
}

// stored is a history entry as kept in etcd. SetsState marks an entry
// written with a state: its Revision is the key's create revision, which
// etcd gives every key of the transaction and which a measurement written
// later does not change.
type stored struct {
	store.Entry
	SetsState bool `json:"sets_state,omitempty"`
}

// appendEntry writes e under the next history ID, with c, in one
// transaction that also moves the history counter and prunes the history.
func (s *Store) appendEntry(ctx context.Context, e store.Entry, c change) (store.Entry, error) {
	for range maxAttempts {
		seq, seqRev, err := s.seq(ctx)
		if err != nil {
			return e, err
		}
		id := seq + 1
		if id == 0 {
			return e, decided("key %s is at the largest history ID: repair it with vipswap state import", s.seqKey())
		}
		rec := stored{Entry: e, SetsState: len(c.ops) > 0}
		rec.ID = id
		raw, err := json.Marshal(rec)
		if err != nil {
			return e, err
		}
		prune, err := s.pruneOps(ctx, id)
		if err != nil {
			return e, err
		}
		// The entry's key must be new: a counter set back (a restore of
		// part of the prefix, a hand edit) must not overwrite history.
		cmps := append([]clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(s.seqKey()), "=", seqRev),
			clientv3.Compare(clientv3.CreateRevision(s.histKey(id)), "=", 0),
		}, c.cmps...)
		elseOps := append(slices.Clone(c.elseOps), clientv3.OpGet(s.histKey(id), clientv3.WithKeysOnly()))
		ops := append(slices.Clone(c.ops), prune...)
		ops = append(ops,
			clientv3.OpPut(s.seqKey(), strconv.FormatUint(id, 10)),
			clientv3.OpPut(s.histKey(id), string(raw)))
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
		if err != nil {
			return e, err
		}
		if resp.Succeeded {
			e.ID = id
			if len(c.ops) > 0 {
				e.Revision = store.Revision(resp.Header.Revision)
			}
			return e, nil
		}
		if c.refused != nil {
			if err := c.refused(resp); err != nil {
				return e, err
			}
		}
		if len(resp.Responses[len(resp.Responses)-1].GetResponseRange().Kvs) > 0 {
			return e, decided("history key %s exists though counter %s says %d: the counter was set back; repair the prefix with vipswap state import", s.histKey(id), s.seqKey(), seq)
		}
	}
	return e, fmt.Errorf("history counter %s kept changing over %d attempts", s.seqKey(), maxAttempts)
}

// seq returns the last history ID given out and the counter's mod revision
// (0, 0 when there is none yet).
func (s *Store) seq(ctx context.Context) (uint64, int64, error) {
	resp, err := s.cli.Get(ctx, s.seqKey())
	if err != nil || len(resp.Kvs) == 0 {
		return 0, 0, err
	}
	n, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, 0, decided("key %s holds %q, not a number (repair it with vipswap state import)", s.seqKey(), resp.Kvs[0].Value)
	}
	return n, resp.Kvs[0].ModRevision, nil
}

// pruneBatch bounds how many history entries one change prunes.
const pruneBatch = 1000

// pruneOps returns the deletion of the entries beyond the retention once
// newest is appended: those more than MaxEntries IDs below it and those
// older than MaxAge, oldest first, at most pruneBatch of them.
func (s *Store) pruneOps(ctx context.Context, newest uint64) ([]clientv3.Op, error) {
	keep := s.opts.Retention
	if keep.MaxEntries <= 0 && keep.MaxAge <= 0 {
		return nil, nil
	}
	opts := []clientv3.OpOption{clientv3.WithRange(s.histKey(newest)), clientv3.WithLimit(pruneBatch), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if keep.MaxAge <= 0 {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	resp, err := s.cli.Get(ctx, s.histPrefix(), opts...)
	if err != nil {
		return nil, err
	}
	var cutoff time.Time
	if keep.MaxAge > 0 {
		cutoff = time.Now().Add(-keep.MaxAge)
	}
	end := ""
	for _, kv := range resp.Kvs {
		id, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), s.histPrefix()), 10, 64)
		if err != nil {
			continue // not an entry's key: deleted with the entries around it
		}
		old := keep.MaxEntries > 0 && newest-id >= uint64(keep.MaxEntries)
		if !old && !cutoff.IsZero() {
			var e struct{ Time time.Time }
			old = json.Unmarshal(kv.Value, &e) == nil && e.Time.Before(cutoff)
		}
		if !old {
			break
		}
		end = string(kv.Key) + "\x00"
	}
	if end == "" {
		return nil, nil
	}
	return []clientv3.Op{clientv3.OpDelete(s.histPrefix(), clientv3.WithRange(end))}, nil
}

// Measure implements store.Store.
func (s *Store) Measure(ctx context.Context, id uint64, m store.Measurement) error {
	return s.call(ctx, func(ctx context.Context) error {
		for range maxAttempts {
			e, modRev, err := s.entry(ctx, id)
			if err != nil {
				return err
			}
			sum, err := e.Measurement.Add(m)
			if err != nil {
				return decided("history entry %d is %v", id, err)
			}
			e.Measurement = &sum
			rec := stored{Entry: e, SetsState: e.Revision != 0}
			rec.Revision = 0
			raw, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.histKey(id)), "=", modRev)).
				Then(clientv3.OpPut(s.histKey(id), string(raw))).Commit()
			if err != nil || resp.Succeeded {
				return err
			}
		}
		return fmt.Errorf("history entry %d kept changing", id)
	})
}

// Entry implements store.Store.
func (s *Store) Entry(ctx context.Context, id uint64) (e store.Entry, err error) {
	err = s.call(ctx, func(ctx context.Context) error {
		e, _, err = s.entry(ctx, id)
		return err
	})
	return e, err
}

func (s *Store) entry(ctx context.Context, id uint64) (store.Entry, int64, error) {
	resp, err := s.cli.Get(ctx, s.histKey(id))
	if err != nil {
		return store.Entry{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return store.Entry{}, 0, fmt.Errorf("history entry %d: %w", id, store.ErrNotFound)
	}
	e, err := s.decodeEntry(resp.Kvs[0])
	return e, resp.Kvs[0].ModRevision, err
}

func (s *Store) decodeEntry(kv *mvccpb.KeyValue) (store.Entry, error) {
	var rec stored
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return rec.Entry, decided("key %s is unreadable: %v", kv.Key, err)
	}
	if rec.SetsState {
		rec.Revision = store.Revision(kv.CreateRevision)
	}
	return rec.Entry, nil
}

// History implements store.Store.
func (s *Store) History(ctx context.Context, limit int) ([]store.Entry, error) {
	return s.HistoryBefore(ctx, 0, limit)
}

// HistoryBefore implements store.Store.
func (s *Store) HistoryBefore(ctx context.Context, before uint64, limit int) (out []store.Entry, err error) {
	err = s.call(ctx, func(ctx context.Context) error {
		end := clientv3.GetPrefixRangeEnd(s.histPrefix())
		if before > 0 {
			end = s.histKey(before)
		}
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
		if limit > 0 {
			opts = append(opts, clientv3.WithLimit(int64(limit)))
		}
		resp, err := s.cli.Get(ctx, s.histPrefix(), opts...)
		if err != nil {
			return err
		}
		out = make([]store.Entry, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			e, err := s.decodeEntry(kv)
			if err != nil {
				// One damaged entry must not hide the history: it shows
				// as what it is.
				id, _ := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), s.histPrefix()), 10, 64)
				e = store.Entry{ID: id, Operation: "unreadable", Result: store.Refused, Error: err.Error()}
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Watch implements store.Store: it sees every change any node commits.
// After etcd was out of reach, or compacted past what the watch had seen,
// it starts again from the current state, so the latest is never missed.
func (s *Store) Watch(ctx context.Context) <-chan store.Event {
	ch := make(chan store.Event, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(ch)
		return ch
	}
	ctx, cancel := context.WithCancel(ctx)
	key := new(byte)
	s.cancels[key] = cancel
	s.wg.Add(1)
	s.mu.Unlock()
	// The watch starts after the revision etcd is at now, so a change
	// committed once Watch returned is never missed (etcd's watch "from
	// now" is set up after a round trip). Out of reach, it starts from
	// whenever it gets through; the controller's reads catch up.
	var from int64
	rctx, rcancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	if resp, err := s.cli.Get(rctx, s.stateKey(), clientv3.WithKeysOnly()); err == nil {
		from = resp.Header.Revision + 1
	}
	rcancel()
	go func() {
		defer s.wg.Done()
		defer close(ch)
		defer func() {
			s.mu.Lock()
			delete(s.cancels, key)
			s.mu.Unlock()
			cancel()
		}()
		s.watch(ctx, ch, from)
	}()
	return ch
}

// watch sends the state's changes from revision from (0: from now) on ch
// until ctx ends.
func (s *Store) watch(ctx context.Context, ch chan store.Event, from int64) {
	send := func(ev store.Event) {
		select {
		case <-ch: // replace what the watcher has not taken yet
		default:
		}
		ch <- ev
	}
	for ctx.Err() == nil {
		var opts []clientv3.OpOption
		if from > 0 {
			opts = append(opts, clientv3.WithRev(from))
		}
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.stateKey(), opts...)
		for resp := range wch {
			if resp.CompactRevision > 0 || resp.Canceled {
				break
			}
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				st, err := s.decodeState(ev.Kv.Value)
				if err != nil {
					continue
				}
				send(store.Event{Revision: store.Revision(ev.Kv.ModRevision), State: st})
				from = ev.Kv.ModRevision + 1
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The watch ended (compaction, lost leader): catch up with the
		// current state, then watch again after it.
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		resp, err := s.cli.Get(rctx, s.stateKey())
		cancel()
		if err != nil {
			continue
		}
		if len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision >= from {
			if st, err := s.decodeState(resp.Kvs[0].Value); err == nil {
				send(store.Event{Revision: store.Revision(resp.Kvs[0].ModRevision), State: st})
			}
		}
		from = resp.Header.Revision + 1
	}
}

// Close implements store.Store: watch channels close, then the client.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, cancel := range s.cancels {
		cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.cli.Close()
}

var _ store.Secrets = (*Store)(nil)

// secretKey is where secret name is kept, beside the state and apart
// from the history (a dump leaves it out).
func (s *Store) secretKey(name string) string { return s.opts.Prefix + "secrets/" + name }

// UpdateSecret implements store.Secrets: a compare-and-swap on the key's
// revision, tried again when another node changed it meanwhile.
func (s *Store) UpdateSecret(ctx context.Context, name string, update func(cur []byte) ([]byte, error)) ([]byte, error) {
	key := s.secretKey(name)
	for range maxAttempts {
		var cur []byte
		var rev int64
		err := s.call(ctx, func(ctx context.Context) error {
			resp, err := s.cli.Get(ctx, key)
			if err == nil && len(resp.Kvs) > 0 {
				cur, rev = resp.Kvs[0].Value, resp.Kvs[0].ModRevision
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		next, err := update(cur)
		if err != nil || string(next) == string(cur) {
			return next, err
		}
		cond := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		if rev == 0 {
			cond = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		var ok bool
		err = s.call(ctx, func(ctx context.Context) error {
			resp, err := s.cli.Txn(ctx).If(cond).Then(clientv3.OpPut(key, string(next))).Commit()
			if err == nil {
				ok = resp.Succeeded
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if ok {
			return next, nil
		}
	}
	return nil, fmt.Errorf("%s: secret %s: changed by others %d times in a row", s.Describe(), name, maxAttempts)
}
