package launch

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vipswap/vipswap/internal/vstest"
)

// TestMain re-executes the test binary as an instance when asked to.
func TestMain(m *testing.M) {
	if addr := os.Getenv("LAUNCH_TEST_INSTANCE"); addr != "" {
		runInstance(addr)
		return
	}
	goleak.VerifyTestMain(m)
}

// runInstance serves /exit (exit 1) and / on addr; it ignores SIGTERM when
// LAUNCH_TEST_STUBBORN is set.
func runInstance(addr string) {
	if os.Getenv("LAUNCH_TEST_STUBBORN") != "" {
		signal.Ignore(syscall.SIGTERM)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	fmt.Println("instance up on", addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	go func() { <-sig; fmt.Println("got SIGTERM"); os.Exit(0) }()
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/exit" {
			os.Exit(1)
		}
		io.WriteString(w, "up")
	}))
}

func start(t *testing.T, replicas int, stubborn bool) (*Group, *vstest.Buffer) {
	t.Helper()
	t.Setenv("LAUNCH_TEST_INSTANCE", "127.0.0.1:{port}")
	if stubborn {
		t.Setenv("LAUNCH_TEST_STUBBORN", "1")
	}
	out := &vstest.Buffer{}
	// The environment carries the address; {port} is expanded in it by a
	// small shell so the command line has the placeholder as a real caller's
	// would.
	g, err := Start(Spec{
		Slot:        "green",
		Command:     []string{"/bin/sh", "-c", `LAUNCH_TEST_INSTANCE=127.0.0.1:$0 exec "$1" -test.run=^$`, "{port}", os.Args[0]},
		Replicas:    replicas,
		StopTimeout: 300 * time.Millisecond,
		Output:      out,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, out
}

func waitUp(t *testing.T, addr string, up bool) {
	t.Helper()
	vstest.WaitFor(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		if (err == nil) != up {
			return fmt.Errorf("%s: want up=%v (last error %v)", addr, up, err)
		}
		return nil
	})
}

func TestStartRestartStop(t *testing.T) {
	g, out := start(t, 2, false)
	addrs := g.Addrs()
	if len(addrs) != 2 || addrs[0] == addrs[1] {
		t.Fatalf("addrs %v, want two distinct", addrs)
	}
	for _, a := range addrs {
		waitUp(t, a, true)
	}
	if !strings.Contains(out.String(), "green "+addrs[0]+" | instance up on "+addrs[0]) {
		t.Fatalf("output not prefixed with slot and address:\n%s", out)
	}

	// An instance that dies is started again on the same address.
	http.Get("http://" + addrs[0] + "/exit")
	waitUp(t, addrs[0], true)
	if n := strings.Count(out.String(), "instance up on "+addrs[0]); n < 2 {
		t.Fatalf("instance started %d times, want a restart:\n%s", n, out)
	}

	g.Close()
	for _, a := range addrs {
		waitUp(t, a, false)
	}
	if n := strings.Count(out.String(), "got SIGTERM"); n != 2 {
		t.Fatalf("%d instances saw SIGTERM, want 2:\n%s", n, out)
	}
}

func TestStubbornInstanceIsKilled(t *testing.T) {
	g, _ := start(t, 1, true)
	waitUp(t, g.Addrs()[0], true)
	done := make(chan struct{})
	go func() { g.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return although StopTimeout is 300ms")
	}
	waitUp(t, g.Addrs()[0], false)
}
