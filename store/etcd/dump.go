package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
)

// Report is what Check found under the prefix.
type Report struct {
	// Store names the etcd and the prefix.
	Store string
	// State is the stored state, nil when none is stored or it is
	// unreadable; Revision is its revision.
	State    *state.State
	Revision store.Revision
	// Seq is the history counter's value.
	Seq uint64
	// Entries counts the readable history entries; FirstID and LastID are
	// the oldest and newest of them.
	Entries         int
	FirstID, LastID uint64
	// Problems lists the damage found, one line each; empty when the
	// prefix is sound.
	Problems []string
	// Dump is what is readable, as vipswap state export writes it (State
	// nil when the state is unreadable).
	Dump store.Dump
}

// Check reads every key under the prefix without changing anything and
// reports what it holds and what is damaged. An error means etcd could
// not be read.
func (s *Store) Check(ctx context.Context) (Report, error) {
	r := Report{Store: s.Describe(), Dump: store.Dump{Format: store.DumpFormat, History: []store.Entry{}}}
	var resp *clientv3.GetResponse
	err := s.call(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.opts.Prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		return err
	})
	if err != nil {
		return r, err
	}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		switch {
		case key == s.stateKey():
			st, err := s.decodeState(kv.Value)
			if err == nil {
				err = st.Validate()
			}
			if err != nil {
				r.Problems = append(r.Problems, fmt.Sprintf("state: %v", err))
				continue
			}
			r.State, r.Revision = &st, store.Revision(kv.ModRevision)
		case key == s.seqKey():
			n, err := strconv.ParseUint(string(kv.Value), 10, 64)
			if err != nil {
				r.Problems = append(r.Problems, fmt.Sprintf("key %s holds %q, not a number", key, kv.Value))
				continue
			}
			r.Seq = n
		case strings.HasPrefix(key, s.histPrefix()):
			id, err := strconv.ParseUint(strings.TrimPrefix(key, s.histPrefix()), 10, 64)
			if err != nil || key != s.histKey(id) {
				r.Problems = append(r.Problems, fmt.Sprintf("key %s is no history entry's", key))
				continue
			}
			e, err := s.decodeEntry(kv)
			if err != nil || e.ID != id {
				if err == nil {
					err = fmt.Errorf("it holds entry %d", e.ID)
				}
				r.Problems = append(r.Problems, fmt.Sprintf("history entry %d: %v", id, err))
				continue
			}
			if r.Entries == 0 {
				r.FirstID = id
			}
			r.Entries++
			r.LastID = id
			r.Dump.History = append(r.Dump.History, e)
		}
	}
	if r.LastID > r.Seq {
		r.Problems = append(r.Problems, fmt.Sprintf("key %s says %d, below history entry %d: it was set back", s.seqKey(), r.Seq, r.LastID))
	}
	if r.State == nil && r.Entries > 0 && len(r.Problems) == 0 {
		r.Problems = append(r.Problems, "history without a state")
	}
	r.Dump.State, r.Dump.Revision = r.State, r.Revision
	return r, nil
}

// importBatch bounds the writes of one transaction of Import: etcd's
// default limit is 128 operations.
const importBatch = 100

// Import writes d under the prefix: the history first, then the state
// with the counter and an "import" entry in one transaction, which the
// running nodes see as any change. A prefix that holds a state is
// refused unless replace is set; then its history is replaced too.
func (s *Store) Import(ctx context.Context, d store.Dump, replace bool, reason string) (store.Revision, error) {
	if err := d.Check(); err != nil {
		return 0, fmt.Errorf("import: %w", err)
	}
	var current store.Revision
	err := s.call(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.stateKey(), clientv3.WithKeysOnly())
		if err == nil && len(resp.Kvs) > 0 {
			current = store.Revision(resp.Kvs[0].ModRevision)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	if current != 0 && !replace {
		return 0, fmt.Errorf("import: %s holds a state (revision %d): pass --replace to overwrite it (running nodes follow the imported state)", s.Describe(), current)
	}
	var last uint64
	err = s.call(ctx, func(ctx context.Context) error {
		_, err := s.cli.Delete(ctx, s.histPrefix(), clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("import: clear the history: %w", err)
	}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := s.call(ctx, func(ctx context.Context) error {
			_, err := s.cli.Txn(ctx).Then(ops...).Commit()
			return err
		})
		ops = ops[:0]
		return err
	}
	for _, e := range d.History {
		raw, err := json.Marshal(stored{Entry: e}) // revisions as recorded: they are another store's
		if err != nil {
			return 0, err
		}
		ops = append(ops, clientv3.OpPut(s.histKey(e.ID), string(raw)))
		last = e.ID
		if len(ops) == importBatch {
			if err := flush(); err != nil {
				return 0, fmt.Errorf("import: history up to entry %d: %w", e.ID, err)
			}
		}
	}
	if err := flush(); err != nil {
		return 0, fmt.Errorf("import: history: %w", err)
	}
	raw, err := json.Marshal(d.State)
	if err != nil {
		return 0, err
	}
	entry := store.Entry{ID: last + 1, Time: time.Now().UTC(), Actor: "local", Operation: "import", To: d.State.Active, Result: store.Applied, Reason: reason}
	rec, err := json.Marshal(stored{Entry: entry, SetsState: true})
	if err != nil {
		return 0, err
	}
	cond := clientv3.Compare(clientv3.ModRevision(s.stateKey()), "=", int64(current))
	var rev store.Revision
	err = s.call(ctx, func(ctx context.Context) error {
		resp, err := s.cli.Txn(ctx).If(cond).Then(
			clientv3.OpPut(s.stateKey(), string(raw)),
			clientv3.OpPut(s.seqKey(), strconv.FormatUint(entry.ID, 10)),
			clientv3.OpPut(s.histKey(entry.ID), string(rec)),
		).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return decided("import: the state changed meanwhile (a node made a change): run the import again")
		}
		rev = store.Revision(resp.Header.Revision)
		return nil
	})
	return rev, err
}
