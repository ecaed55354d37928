// Package layers holds the tests of the house's rules: which package may
// depend on which. A rule broken here is a design change; change the rule
// in docs/architecture.md first.
package layers

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/vipswap/vipswap"

// deps returns, for each package of ours, the packages of ours it depends
// on, directly or not (tests excluded).
func deps(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Deps", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	all := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		var ours []string
		for _, d := range p.Deps {
			if d == module || strings.HasPrefix(d, module+"/") {
				ours = append(ours, strings.TrimPrefix(strings.TrimPrefix(d, module), "/"))
			}
		}
		all[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")] = ours
	}
	return all
}

// TestLayers: each rule names a package and the only packages of ours it
// may depend on, however indirectly.
func TestLayers(t *testing.T) {
	all := deps(t)
	for pkg, allowed := range map[string][]string{
		// Applications embed these: no server, no etcd client.
		"slotapp": {},
		// The admin API's wire types are plain data; the Go client
		// stands on them alone.
		"wire":   {},
		"client": {"wire"},
		// The request path stands on the routing table alone (and on
		// its own HTTP/1.1 server, the PROXY protocol's parser, raw
		// socket I/O, socket errors, the monotonic clock and writes sent
		// behind): no control plane, no wire types, no store.
		"proxy":            {"route", "proxy/h1", "proxy/proxyproto", "proxy/rawsock", "internal/writebehind", "internal/sockerr", "internal/clock"},
		"proxy/h1":         {"proxy/proxyproto", "proxy/rawsock", "internal/writebehind", "internal/clock"},
		"proxy/proxyproto": {},
		"proxy/rawsock":    {},
		"internal/clock":   {},
		// Writes sent from a goroutine of their own (HTTP/2 both ways).
		"internal/writebehind": {"internal/clock"},
		// The ground floors stand on nothing of ours.
		"route":  {},
		"state":  {},
		"launch": {},
		// Progressive delivery's logic and the counting it judges by
		// stand without the controller, the store, the data plane and
		// the admin API: pure functions of the state, the counts and
		// the clock, testable alone.
		"measure": {"route", "state", "wire", "gate"},
		"rollout": {"measure", "route", "state", "wire", "gate"},
		// The mirror of vipswap shadow is the proxy's hook and nothing
		// above it: the controller tells it the shadow (a state) and
		// reads its figures (wire types) through an interface of its own.
		"shadow": {"proxy", "proxy/h1", "proxy/proxyproto", "proxy/rawsock", "internal/writebehind", "internal/sockerr", "internal/clock", "route", "state", "wire"},
	} {
		got, ok := all[pkg]
		if !ok {
			t.Errorf("no package %s", pkg)
			continue
		}
		for _, d := range got {
			if !slices.Contains(allowed, d) {
				t.Errorf("%s depends on %s; it may depend only on %v", pkg, d, allowed)
			}
		}
	}
}

// TestNodeIsBelowTheCLI: the running node (node) is the CLI's alone: it
// depends on no command and not on the admin API's client (it is the
// server), and no package but cmd/vipswap depends on it.
func TestNodeIsBelowTheCLI(t *testing.T) {
	all := deps(t)
	got, ok := all["node"]
	if !ok {
		t.Fatal("no package node")
	}
	for _, d := range got {
		if d == "client" || strings.HasPrefix(d, "cmd/") {
			t.Errorf("node depends on %s; it may depend on no command and not on client", d)
		}
	}
	for pkg, ds := range all {
		if pkg != "cmd/vipswap" && slices.Contains(ds, "node") {
			t.Errorf("%s depends on node; only cmd/vipswap may", pkg)
		}
	}
}

// TestClusterIsBelowTheController: cluster following (cluster) talks to
// the controller through the interface it declares, so it depends on
// neither the controller nor anything above or beside it: not control,
// api, client, proxy or node.
func TestClusterIsBelowTheController(t *testing.T) {
	all := deps(t)
	got, ok := all["cluster"]
	if !ok {
		t.Fatal("no package cluster")
	}
	for _, d := range got {
		for _, banned := range []string{"control", "api", "client", "proxy", "node"} {
			if d == banned || strings.HasPrefix(d, banned+"/") {
				t.Errorf("cluster depends on %s; it may depend on none of control, api, client, proxy, node", d)
			}
		}
	}
}

// TestControlIsBelowItsPlanesAndServer: the controller declares the
// DataPlane interface that the built-in proxy and the HAProxy driver
// satisfy and depends on neither, nor on anything that serves or calls
// its admin API, nor on the releases and the node built on it.
func TestControlIsBelowItsPlanesAndServer(t *testing.T) {
	all := deps(t)
	got, ok := all["control"]
	if !ok {
		t.Fatal("no package control")
	}
	banned := []string{"proxy", "driver", "shadow", "api", "client", "release", "node", "cmd"}
	for _, d := range got {
		for _, b := range banned {
			if d == b || strings.HasPrefix(d, b+"/") && !(b == "proxy" && (d == "proxy/h1" || d == "proxy/proxyproto" || d == "proxy/rawsock")) {
				t.Errorf("control depends on %s; it may depend on none of %v (the health checker's proxy/h1, proxy/proxyproto and proxy/rawsock aside)", d, banned)
			}
		}
	}
}
