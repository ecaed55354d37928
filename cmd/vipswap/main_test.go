package main

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

func TestMain(m *testing.M) { vstest.Main(m) }

// errNotYet is what a vstest.WaitFor condition returns while it waits.
var errNotYet = errors.New("not yet")

// httpClient is a plain client for one-off requests.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// managedSlots is a slots: section with two run: slots of two sample-app
// replicas each.
const managedSlots = `
slots:
  blue:
    run:
      command: [vipswap, app, --slot, blue, --listen, "127.0.0.1:{port}"]
      replicas: 2
  green:
    run:
      command: [vipswap, app, --slot, green, --listen, "127.0.0.1:{port}"]
      replicas: 2
`

// staticSlots returns a slots: section listing fixed instance addresses.
func staticSlots(slots map[string][]string) string {
	var b strings.Builder
	b.WriteString("slots:\n")
	for _, name := range []string{"blue", "green"} {
		fmt.Fprintf(&b, "  %s:\n    instances: [%s]\n", name, strings.Join(slots[name], ", "))
	}
	return b.String()
}

// testConfig is a configuration on free loopback ports with fast probes.
// Their timeout only ends a probe that hangs: two slow answers in a row
// on a busy machine would mark a healthy instance down.
func testConfig(dir, slots string) string {
	return fmt.Sprintf(`
admin:
  listen: 127.0.0.1:0
state:
  path: %s
listeners:
  prod: 127.0.0.1:0
  stage: 127.0.0.1:0
health:
  interval: 100ms
  timeout: 5s
  rise: 2
  fall: 2
%s
active: blue
`, filepath.Join(dir, "state.db"), slots)
}

// startStatic starts n sample apps per slot and returns their addresses.
func startStatic(t *testing.T, n int) (map[string][]*vstest.App, map[string][]string) {
	apps := make(map[string][]*vstest.App)
	addrs := make(map[string][]string)
	for _, slot := range []string{"blue", "green"} {
		for range n {
			a := vstest.StartApp(t, slot, "127.0.0.1:0")
			apps[slot] = append(apps[slot], a)
			addrs[slot] = append(addrs[slot], a.Addr)
		}
	}
	return apps, addrs
}
