package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/etcdtest"
	"github.com/vipswap/vipswap/internal/pebbletest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClusterACME: three nodes on one etcd with the same acme block get
// one certificate, not three: one node obtains it (under a lock in etcd)
// while the others wait and load it, and all three serve it. Pebble
// validates on the first node's listeners only, so the challenges the
// other nodes may start are answered through etcd.
func TestClusterACME(t *testing.T) {
	defer pebbletest.Cleanup()
	etcd := etcdtest.Start(t)
	_, addrs := startStatic(t, 1)
	prod0, stage0 := vstest.FreeAddr(t), vstest.FreeAddr(t)
	port := func(addr string) int {
		_, p, _ := net.SplitHostPort(addr)
		var n int
		fmt.Sscan(p, &n)
		return n
	}
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: port(stage0), TLSPort: port(prod0)})
	const name = "www.example.com"
	nodes := make([]*switchtest.Switch, 3)
	prods := []string{prod0, vstest.FreeAddr(t), vstest.FreeAddr(t)}
	stages := []string{stage0, vstest.FreeAddr(t), vstest.FreeAddr(t)}
	var wg sync.WaitGroup
	for i := range nodes {
		dir := t.TempDir()
		cfg := clusterConfig(dir, etcd.Endpoint, "/acme-cluster/", staticSlots(addrs))
		cfg = strings.Replace(cfg, "  prod: 127.0.0.1:0\n  stage: 127.0.0.1:0\n", fmt.Sprintf(`  prod:
    addr: %s
    tls:
      acme:
        email: ops@example.com
        ca: %s
        ca_root: %s
        names: [%s]
  stage: %s
`, prods[i], pebble.Directory, pebble.CARoot, name, stages[i]), 1)
		wg.Go(func() { nodes[i] = switchtest.Serve(t, dir, cfg) })
	}
	wg.Wait()
	for _, sw := range nodes {
		if sw == nil {
			t.FailNow()
		}
	}
	roots := pebble.Roots(t)
	serials := make([]string, len(nodes))
	for i := range nodes {
		vstest.WaitFor(t, 2*time.Minute, func() error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", prods[i], &tls.Config{ServerName: name, RootCAs: roots})
			if err != nil {
				return fmt.Errorf("node %d: %w", i, err)
			}
			defer c.Close()
			serials[i] = c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
			return nil
		})
	}
	if serials[0] != serials[1] || serials[1] != serials[2] {
		t.Errorf("the nodes serve certificates %v, want one", serials)
	}
	if issued := pebble.Issued(); len(issued) != 1 {
		t.Errorf("pebble issued %v, want one certificate", issued)
	}
	for i, sw := range nodes {
		st, err := sw.Client.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var listed []string
		for _, l := range st.Listeners {
			for _, c := range l.TLS {
				listed = append(listed, strings.Join(c.Names, ","))
			}
		}
		if len(listed) != 1 || listed[0] != name {
			t.Errorf("node %d's status lists certificates %v, want [%s]", i, listed, name)
		}
	}
	// The certificate and its key are in etcd, nowhere else.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/acme-cluster/acme/certificates/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	if len(keys) != 3 { // .crt, .key, .json
		t.Errorf("etcd holds %v under acme/certificates/, want one certificate's crt, key and json", keys)
	}
}
