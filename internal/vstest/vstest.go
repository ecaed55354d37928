// Package vstest is the harness of vipswap's process-level tests: it builds
// the vipswap binary once per test binary, starts real processes on loopback
// with port 0, learns their addresses from their log lines, waits on
// conditions with deadlines, and generates load that counts every failure.
package vstest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// Main runs the tests of a package that uses Binary and removes the built
// binary afterwards. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// Binary returns the path of a vipswap binary built from this checkout, once
// per test binary; with the race detector when the tests run with it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "vipswap-test-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "vipswap")
		args := []string{"build", "-o", buildPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/vipswap/vipswap/cmd/vipswap")
		cmd := exec.Command("go", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// MinWait is the least any wait of this package gives an event before it
// fails the test, whatever timeout it was given: a busy machine (CI, two
// cores shared with other work) may take many times longer than an idle
// one. Waits end at the event, so this only slows a test that fails.
const MinWait = time.Minute

// patient returns how long a wait asked to last timeout lasts.
func patient(timeout time.Duration) time.Duration { return max(timeout, MinWait) }

// WaitFor polls cond every 20ms until it returns nil, failing the test
// with cond's last error after timeout (at least MinWait).
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	timeout = patient(timeout)
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address with a port nobody listens on now,
// for a server the test starts next (etcd, HAProxy, a listener whose
// address must be known in advance). The port is taken from below the
// kernel's ephemeral range where there is room: a port from that range can
// be taken between the check and the server's bind by any outgoing
// connection on the machine (a busy CI machine makes thousands), while a
// port below it is only ever taken by a listener that asks for it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	handedMu.Lock()
	defer handedMu.Unlock()
	// The same port is never handed out twice by one test binary: two
	// addresses asked for in a row (a DNS server's and a listener's)
	// must differ.
	low := ephemeralLow()
	for range 200 {
		addr := "127.0.0.1:0"
		if low > minPort+1000 {
			addr = fmt.Sprintf("127.0.0.1:%d", minPort+rand.IntN(low-minPort))
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken: try another
		}
		addr = ln.Addr().String()
		ln.Close()
		if !handed[addr] {
			handed[addr] = true
			return addr
		}
	}
	t.Fatal("no free port not handed out before in 200 tries")
	return ""
}

// minPort is the lowest port FreeAddr hands out: above the well-known and
// the commonly configured service ports.
const minPort = 20000

// ephemeralLow is the first port of the kernel's ephemeral range, or 0
// when it cannot be read (not Linux).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil {
		return 0
	}
	return low
}

var (
	handedMu sync.Mutex
	handed   = map[string]bool{} // addresses FreeAddr returned
)

// Need returns the path of program (looked up on PATH, then in
// /usr/sbin), which Debian's package pkg installs. When it is missing the
// test fails, saying that scripts/test.sh installs it; or, when the
// person running the suite refused installs (SKIP_INSTALL=1, which sets
// VIPSWAP_SKIP_MISSING=1), it is skipped.
func Need(t testing.TB, program, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	if p := "/usr/sbin/" + program; isExecutable(p) {
		return p
	}
	msg := fmt.Sprintf("%s is not installed: scripts/test.sh installs Debian's %s (apt-get install %s)", program, pkg, pkg)
	if os.Getenv("VIPSWAP_SKIP_MISSING") == "1" {
		t.Skip(msg + "; skipped, as SKIP_INSTALL=1 asked")
	}
	t.Fatal(msg)
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// BinaryVersion builds vipswap from this checkout reporting version as
// its `vipswap version` (main.buildVersion), into a new file under dir;
// with the race detector when the tests run with it. Tests of upgrades
// use two such builds.
func BinaryVersion(t testing.TB, dir, version string) string {
	t.Helper()
	path := filepath.Join(dir, "vipswap-"+version)
	args := []string{"build", "-o", path, "-ldflags", "-X main.buildVersion=" + version}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/vipswap/vipswap/cmd/vipswap")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return path
}
