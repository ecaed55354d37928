package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/internal/pebbletest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/slotapp"
)

// instanceArg makes the test binary, run as a managed instance's command
// (managedSlot), serve as an instance instead of running the tests.
const instanceArg = "node-test-instance"

// TestMain runs the tests, or, when the test binary is a run: slot's
// command, serves as an instance of it.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == instanceArg {
		serveInstance(os.Args[2], "127.0.0.1:"+os.Getenv("PORT"))
		return
	}
	code := m.Run()
	pebbletest.Cleanup()
	os.Exit(code)
}

// serveInstance serves instanceHandler on addr until SIGTERM, then drains
// and exits.
func serveInstance(slot, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := slotapp.Serve(ctx, ln, instanceHandler(slot, ln.Addr().String())); err != nil {
		fmt.Println("serve:", err)
		os.Exit(1)
	}
}

// instanceHandler answers the probe contract for slot, and every other
// request with "slot addr".
func instanceHandler(slot, addr string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /api/ping", slotapp.Ping(slot))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, slot+" "+addr) })
	return mux
}

// instance starts an in-process instance of slot on 127.0.0.1 and returns
// its address.
func instance(t *testing.T, slot string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: instanceHandler(slot, ln.Addr().String()), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// staticSlot is a slot's configuration with these instances.
func staticSlot(name string, addrs ...string) string {
	return fmt.Sprintf("  %s:\n    instances: [%s]\n", name, strings.Join(addrs, ", "))
}

// managedSlot is a run: slot's configuration whose one instance is this
// test binary (TestMain).
func managedSlot(name string) string {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("  %s:\n    run:\n      command: [%q, %s, %s]\n      stop_timeout: 5s\n", name, self, instanceArg, name)
}

// writeConfig writes a configuration with these slots (blue active, the
// next one standby) to dir's vipswap.yaml, on free loopback ports, with
// fast probes, and returns its path.
func writeConfig(t *testing.T, dir string, slots ...string) string {
	t.Helper()
	text := fmt.Sprintf(`
admin:
  listen: 127.0.0.1:0
state:
  path: %s
listeners:
  prod: 127.0.0.1:0
  stage: 127.0.0.1:0
health:
  interval: 20ms
  timeout: 1s
  rise: 1
  fall: 1
slots:
%sactive: blue
`, filepath.Join(dir, "state.db"), strings.Join(slots, ""))
	path := filepath.Join(dir, "vipswap.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startNode starts a node on the configuration at path as serve does, up
// to serving its listeners; the test's cleanup shuts it down. Its log
// goes to the returned buffer.
func startNode(t *testing.T, path string) (*node, *vstest.Buffer) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	out := &vstest.Buffer{}
	logs, log := newLogSwitch(cfg.Log, out)
	n := newNode(Setup{Path: path, Config: cfg, Stderr: out, Version: "test"}, logs, log)
	t.Cleanup(n.close)
	if err := n.open(); err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := n.start(t.Context()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(n.shutdown)
	return n, out
}

// get returns the answer to a GET of url, or an error naming a failure.
func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}

// listenerURL is the URL of one of n's listeners.
func listenerURL(ln net.Listener) string { return "http://" + ln.Addr().String() + "/" }

// waitAnswer waits until a GET through ln is answered by want ("slot
// addr").
func waitAnswer(t *testing.T, ln net.Listener, want string) {
	t.Helper()
	vstest.WaitFor(t, 30*time.Second, func() error {
		got, err := get(listenerURL(ln))
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("answered by %q, want %q", got, want)
		}
		return nil
	})
}

// members returns each slot's instance addresses in n's status.
func members(n *node) map[string][]string {
	out := map[string][]string{}
	for _, s := range n.ctrl.Status().Slots {
		out[s.Name] = nil
		for _, i := range s.Instances {
			out[s.Name] = append(out[s.Name], i.Addr)
		}
		slices.Sort(out[s.Name])
	}
	return out
}
