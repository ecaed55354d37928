package acmecert

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// lockTTL is how long, in seconds, a lock outlives the node holding it
// when that node dies: its etcd lease is kept alive while it runs.
const lockTTL = 30

// EtcdStorage keeps certificates, keys, ACME accounts, challenge tokens
// and locks in etcd, so that the nodes of a cluster share them: one node
// obtains or renews a name's certificate while the others wait for the
// lock and then load it. Keys are certmagic's ("certificates/CA/NAME/
// NAME.crt"), under Prefix; values are stored as they are. Locks are
// etcd mutexes (the concurrency package), each on its own lease.
type EtcdStorage struct {
	// Client is the etcd client (the state store's).
	Client *clientv3.Client
	// Prefix is the key prefix, such as /vipswap/acme/; it ends in "/".
	Prefix string
	// Timeout, when set, bounds each read, write and delete (not a Lock,
	// which waits for the holder): an unreachable etcd fails them
	// instead of holding a challenge's request or handshake.
	Timeout time.Duration

	mu    sync.Mutex
	locks map[string]*etcdLock
}

type etcdLock struct {
	session *concurrency.Session
	mutex   *concurrency.Mutex
}

var _ certmagic.Storage = (*EtcdStorage)(nil)

func (s *EtcdStorage) key(k string) string { return s.Prefix + strings.Trim(k, "/") }

// bounded returns ctx bounded by Timeout.
func (s *EtcdStorage) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.Timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.Timeout)
}

// Store puts value at key.
func (s *EtcdStorage) Store(ctx context.Context, key string, value []byte) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	_, err := s.Client.Put(ctx, s.key(key), string(value))
	return err
}

// Load returns the value at key, or an error that is fs.ErrNotExist.
func (s *EtcdStorage) Load(ctx context.Context, key string) ([]byte, error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	resp, err := s.Client.Get(ctx, s.key(key))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
	}
	return resp.Kvs[0].Value, nil
}

// Delete removes key and every key under it ("key/...").
func (s *EtcdStorage) Delete(ctx context.Context, key string) error {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	k := s.key(key)
	_, err := s.Client.Txn(ctx).Then(
		clientv3.OpDelete(k),
		clientv3.OpDelete(k+"/", clientv3.WithPrefix()),
	).Commit()
	return err
}

// Exists reports whether key is a value or the prefix of one.
func (s *EtcdStorage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List returns the keys under dir: all of them when recursive, else the
// names one level below it (a "directory" counts once).
func (s *EtcdStorage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	base := strings.Trim(dir, "/")
	pfx := s.key(base) + "/"
	if base == "" {
		pfx = s.Prefix
	}
	resp, err := s.Client.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range resp.Kvs {
		rel := strings.TrimPrefix(string(kv.Key), pfx)
		if !recursive {
			rel, _, _ = strings.Cut(rel, "/")
		}
		k := path.Join(base, rel)
		if len(out) == 0 || out[len(out)-1] != k {
			out = append(out, k)
		}
	}
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", dir, fs.ErrNotExist)
	}
	return out, nil
}

// Stat says whether key is a value (its size) or the prefix of others.
func (s *EtcdStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	k := s.key(key)
	resp, err := s.Client.Txn(ctx).Then(
		clientv3.OpGet(k),
		clientv3.OpGet(k+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		return certmagic.KeyInfo{Key: key, Size: int64(len(kvs[0].Value)), IsTerminal: true}, nil
	}
	if resp.Responses[1].GetResponseRange().Count > 0 {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fmt.Errorf("%s: %w", key, fs.ErrNotExist)
}

// Lock takes the cluster-wide lock name, waiting for whoever holds it, or
// until ctx ends. A node that dies holding it loses it lockTTL seconds
// later.
func (s *EtcdStorage) Lock(ctx context.Context, name string) error {
	session, err := concurrency.NewSession(s.Client, concurrency.WithTTL(lockTTL))
	if err != nil {
		return err
	}
	m := concurrency.NewMutex(session, s.key("locks/"+name))
	if err := m.Lock(ctx); err != nil {
		session.Close()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks == nil {
		s.locks = map[string]*etcdLock{}
	}
	// Lock is only called again for name after Unlock, or by another
	// goroutine that waited for the mutex: the one held before is gone.
	s.locks[name] = &etcdLock{session: session, mutex: m}
	return nil
}

// Unlock releases the lock name.
func (s *EtcdStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.locks[name]
	delete(s.locks, name)
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("unlock %s: not locked", name)
	}
	err := l.mutex.Unlock(ctx)
	// Closing the session revokes its lease: the lock key goes even when
	// the delete above failed.
	return errors.Join(err, l.session.Close())
}

// String names the storage in logs.
func (s *EtcdStorage) String() string { return "etcd:" + s.Prefix }
