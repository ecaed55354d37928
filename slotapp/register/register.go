// Package register makes an application's instance join a slot of a
// vipswap cluster on its own, by holding a lease in the cluster's etcd.
// It is apart from slotapp so that applications that only answer the
// probe do not pull in the etcd client.
package register

import (
	"context"
	"time"

	"github.com/vipswap/vipswap/store/etcd"
)

// Instance makes addr an instance of slot for the vipswap nodes whose state
// is in etcd at etcdEndpoints (under the default prefix, /vipswap/; see
// InstanceUnder), until ctx ends: then it deregisters, and every node stops
// sending it new requests at once. If the process dies without that, its
// lease expires after ttl seconds (5) and the nodes drop it then. vipswap
// still probes a registered instance before it takes traffic. It returns
// once registered.
func Instance(ctx context.Context, etcdEndpoints []string, slot, addr string) (*etcd.Registration, error) {
	return InstanceUnder(ctx, etcdEndpoints, etcd.DefaultPrefix, slot, addr, 5*time.Second)
}

// InstanceUnder is Instance with the cluster's key prefix
// (state.etcd.prefix) and the lease's ttl.
func InstanceUnder(ctx context.Context, etcdEndpoints []string, prefix, slot, addr string, ttl time.Duration) (*etcd.Registration, error) {
	return etcd.Register(ctx, etcdEndpoints, prefix, slot, addr, ttl)
}
