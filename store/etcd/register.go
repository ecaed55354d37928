package etcd

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultPrefix is the key prefix of state.etcd.prefix's default.
const DefaultPrefix = "/vipswap/"

// instancesKey is where instance slot/addr registers, under prefix.
func instancesKey(prefix, slot, addr string) string {
	return prefix + "instances/" + slot + "/" + addr
}

// Registration is an instance's membership of a slot, held by an etcd
// lease that Register keeps alive.
type Registration struct {
	done chan struct{}
	err  error // set before done is closed
}

// Done is closed when the registration has ended: its context ended (the
// instance left, deregistered), or the lease was lost for good.
func (r *Registration) Done() <-chan struct{} { return r.done }

// Err says why the registration ended: nil when its context ended and it
// deregistered.
func (r *Registration) Err() error { <-r.done; return r.err }

// Register makes addr an instance of slot for every vipswap node on
// endpoints whose state is under prefix, until ctx ends: it writes the
// instance's key with a lease of ttl and keeps the lease alive. When ctx
// ends it deletes the key (revokes the lease), so nodes drop the instance
// at once; if the process dies instead, the lease expires after ttl and
// nodes drop it then. When etcd is out of reach for longer than ttl, it
// registers again once etcd answers. It returns once the first
// registration is written, or its error.
func Register(ctx context.Context, endpoints []string, prefix, slot, addr string, ttl time.Duration) (*Registration, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if ttl < 2*time.Second {
		return nil, fmt.Errorf("register: ttl %s: want at least 2s", ttl)
	}
	if slot == "" || strings.Contains(slot, "/") || addr == "" || strings.Contains(addr, "/") {
		return nil, fmt.Errorf("register: want a slot name and a host:port, got %q and %q", slot, addr)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("register: etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	key := instancesKey(prefix, slot, addr)
	hold := func() (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		lease, err := cli.Grant(rctx, int64(ttl/time.Second))
		if err != nil {
			return 0, nil, err
		}
		if _, err := cli.Put(rctx, key, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(lease.ID)); err != nil {
			return 0, nil, err
		}
		alive, err := cli.KeepAlive(ctx, lease.ID)
		return lease.ID, alive, err
	}
	lease, alive, err := hold()
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("register %s in slot %s: etcd %s: %w", addr, slot, strings.Join(endpoints, ","), err)
	}
	r := &Registration{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer cli.Close()
		for {
			for range alive { // the keep-alive answers; it closes when the lease is gone or ctx ends
			}
			if ctx.Err() != nil {
				rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				cli.Revoke(rctx, lease) // leave at once, not after ttl
				cancel()
				return
			}
			for { // the lease was lost (etcd out of reach for ttl): hold a new one
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				if lease, alive, err = hold(); err == nil {
					break
				}
			}
		}
	}()
	return r, nil
}

// WatchRegistered calls set with every slot's registered instances now and
// after every change, until ctx ends. When etcd is out of reach it keeps
// the last set it had (an instance whose lease expires meanwhile leaves
// when etcd answers again); health checks still apply.
func (s *Store) WatchRegistered(ctx context.Context, set func(map[string][]string)) {
	prefix := s.opts.Prefix + "instances/"
	var last map[string][]string
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		resp, err := s.cli.Get(rctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
		now := map[string][]string{}
		for _, kv := range resp.Kvs {
			slot, addr, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), prefix), "/")
			if ok && slot != "" && addr != "" {
				now[slot] = append(now[slot], addr)
			}
		}
		if last == nil || !maps.EqualFunc(now, last, slices.Equal[[]string]) {
			set(now)
			last = now
		}
		// Wait for the next change after what was read.
		wctx, stop := context.WithCancel(ctx)
		wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithKeysOnly())
		select {
		case <-ctx.Done():
		case <-wch: // a change, or the watch ended: read again
		}
		stop()
	}
}
