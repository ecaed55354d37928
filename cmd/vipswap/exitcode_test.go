package main

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
)

// TestExitCodes: a script can trust the exit code. A command line that
// cannot do what it says is a usage error (2) and changes nothing; a
// change that applied but whose --wait gave up exits 3 and says that it
// applied. Before, "swap --wait --timeout 0s" swapped and then exited 1,
// so a retrying script swapped back.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 2)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	ctx := context.Background()
	revision := func() uint64 {
		st, err := sw.Client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Revision
	}

	before := revision()
	for _, args := range [][]string{
		{"swap", "--wait", "--timeout", "0s"},
		{"swap", "--wait", "--timeout", "-1s"},
		{"rollback", "--wait", "--timeout", "0s"},
		{"swap", "--timeout", "0s"},
		{"drain", "blue", addrs["blue"][0], "--wait", "--timeout", "0s"},
		{"swap", "--reason", strings.Repeat("x", api.MaxReason+1)},
		{"swap", "--wait", "--dry-run"},
		{"wait", "drained", "green", "--timeout", "0s"},
		{"history", "--limit", "0"},
		{"shift", "--to", "green", "--weight", "NaN"},
		{"swap", "--if-revision", "0"},
		{"history", "--before", "0"},
		{"shift", "--to", "green", "--weight", "0.05"},
		{"rollout", "start", "--to", "green", "--steps", "10,33.33,100"},
		{"shadow", "start", "--to", "green", "--percent", "NaN"},
	} {
		code, out := cli(t, sw, args...)
		if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("vipswap %.60s: exit %d, output %q; want 2 and one line", strings.Join(args, " "), code, out)
		}
	}
	if after := revision(); after != before {
		t.Fatalf("usage errors changed the state: revision %d -> %d", before, after)
	}

	// A request held on blue keeps it from draining within the wait; it is
	// held until the command has returned (the instance holds it up to 5
	// minutes), however long the command takes to start.
	held, release := holdRequest(sw.Prod + "/api/test?delay=5m")
	waitInFlight(t, sw, "blue", 1)
	code, out := cli(t, sw, "swap", "--wait", "--timeout", "300ms")
	want := regexp.MustCompile(`(?m)^vipswap swap: swap blue -> green applied \(revision 2\), but the wait gave up: blue still has 1 request in flight after 300ms$`)
	if code != 3 || !want.MatchString(out) {
		t.Fatalf("swap --wait with a request held: exit %d:\n%s\nwant exit 3 and a line matching %s", code, out, want)
	}
	if after := revision(); after != before+1 {
		t.Fatalf("revision %d, want %d: the swap applied", after, before+1)
	}
	release()
	<-held

	// The same for an instance drain.
	held, release = holdRequest(sw.Prod + "/api/test?delay=5m")
	defer func() { release(); <-held }()
	var busy string
	vstest.WaitFor(t, 10*time.Second, func() error {
		st, _ := sw.Client.Status(ctx)
		for _, s := range st.Slots {
			for _, i := range s.Instances {
				if s.Name == "green" && i.InFlight.Prod > 0 {
					busy = i.Addr
					return nil
				}
			}
		}
		return fmt.Errorf("no green instance has the request yet")
	})
	code, out = cli(t, sw, "drain", "green", busy, "--wait", "--timeout", "300ms")
	if code != 3 || !strings.Contains(out, "drain green/"+busy+" applied (revision 3), but the wait gave up") {
		t.Fatalf("drain --wait with a request held: exit %d:\n%s\nwant exit 3", code, out)
	}
}

// holdRequest sends a GET that the instance holds (url's delay) until
// release is called, and closes done once it has ended.
func holdRequest(url string) (done chan struct{}, release func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	return done, cancel
}

// TestVerbTypos: a mistyped verb is a usage error that names the verb it
// most likely meant, whatever follows it, help included.
func TestVerbTypos(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"swpa"}, 2, `unknown command "swpa": did you mean swap?`},
		{[]string{"swpa", "--force"}, 2, `unknown command "swpa": did you mean swap?`},
		{[]string{"help", "swpa"}, 2, `unknown command "swpa": did you mean swap?`},
		{[]string{"help", "shift"}, 0, "vipswap shift --to SLOT --weight PCT"},
		{[]string{"status", "--jsno"}, 2, "unknown flag --jsno: did you mean --json?"},
		{[]string{"slot", "remov", "v3"}, 2, `unknown sub-verb "remov": did you mean vipswap slot remove?`},
		{[]string{"slot", "ad", "v3", "--instances", "127.0.0.1:1"}, 2, `unknown sub-verb "ad": did you mean vipswap slot add?`},
		{[]string{"route", "sett", "--path-prefix", "/a/", "--slot", "blue"}, 2, `unknown sub-verb "sett": did you mean vipswap route set?`},
		{[]string{"rollout", "stat", "--admin", "127.0.0.1:1"}, 2, `unknown sub-verb "stat": did you mean vipswap rollout start or vipswap rollout status?`},
		{[]string{"state", "chek", "--file", "x"}, 2, `unknown sub-verb "chek": did you mean vipswap state check?`},
		{[]string{"slot"}, 2, "missing a sub-verb"},
		{[]string{"rollout"}, 2, "missing a sub-verb"},
		{[]string{"state"}, 2, "missing a sub-verb"},
		{[]string{"wait", "drainedd", "blue"}, 2, `unknown sub-verb "drainedd": did you mean vipswap wait drained blue?`},
		{[]string{"wait", "blue"}, 2, "the word drained is missing: vipswap wait drained blue"},
		{[]string{"completion", "fishy"}, 2, `unknown sub-verb "fishy": did you mean vipswap completion fish?`},
	} {
		p := vstest.Start(t, vstest.Binary(t), c.args...)
		code := p.Wait(t, 30*time.Second)
		if code != c.code || !strings.Contains(p.Output(), c.want) {
			t.Errorf("vipswap %s: exit %d, output:\n%s\nwant exit %d and %q", strings.Join(c.args, " "), code, p.Output(), c.code, c.want)
		}
	}
}
