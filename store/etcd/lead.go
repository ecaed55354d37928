package etcd

import (
	"context"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// leaseTTL is how long, in seconds, a leader's lease outlives the leader:
// how soon another node takes over when it dies or loses etcd.
const leaseTTL = 3

// Leadership is one node's part in an election: it campaigns until ctx
// ends, and while it holds the lease, Leading is true.
type Leadership struct {
	leading atomic.Bool
	done    chan struct{}
}

// Lead campaigns for the election called name (under the store's prefix)
// as id, in the background, until ctx ends; it campaigns again whenever
// it loses its lease (etcd out of reach for leaseTTL seconds). onChange, if
// set, is called whenever Leading changes.
func (s *Store) Lead(ctx context.Context, name, id string, onChange func(leading bool)) *Leadership {
	l := &Leadership{done: make(chan struct{})}
	set := func(v bool) {
		if l.leading.Swap(v) != v && onChange != nil {
			onChange(v)
		}
	}
	go func() {
		defer close(l.done)
		defer set(false)
		for ctx.Err() == nil {
			s.campaign(ctx, name, id, set)
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return l
}

// campaign runs one session: wins the election (or waits until ctx ends),
// then leads until the session's lease is lost.
func (s *Store) campaign(ctx context.Context, name, id string, set func(bool)) {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(leaseTTL), concurrency.WithContext(ctx))
	if err != nil {
		return
	}
	defer sess.Close()
	e := concurrency.NewElection(sess, s.opts.Prefix+"leader/"+name)
	if err := e.Campaign(ctx, id); err != nil {
		return
	}
	set(true)
	defer set(false)
	select {
	case <-ctx.Done():
		rctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
		e.Resign(rctx) // let another node take over now, not after the TTL
		cancel()
	case <-sess.Done():
	}
}

// Leading reports whether this node holds the lease now.
func (l *Leadership) Leading() bool { return l.leading.Load() }

// Done is closed once the campaign has stopped after its context ended.
func (l *Leadership) Done() <-chan struct{} { return l.done }
