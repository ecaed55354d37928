package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
)

// cli runs one vipswap command against sw and returns its exit code and
// output.
func cli(t *testing.T, sw *switchtest.Switch, args ...string) (int, string) {
	t.Helper()
	p := vstest.Start(t, vstest.Binary(t), append(args, "--admin", sw.Admin)...)
	code := p.Wait(t, 60*time.Second)
	return code, p.Output()
}

// TestCLI walks the operator's commands through the real binary: dry run,
// swap with a reason, rollback, drain and ready, wait, history.
func TestCLI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 2)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)

	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rollback"}, 1, "rollback refused: no swap has happened yet"},
		{[]string{"swap", "--dry-run"}, 0, "dry run at revision 1: swap blue -> green\n  green has 2 instances routable; 0 requests in flight on blue\n  would apply; nothing changed"},
		{[]string{"swap", "--reason", "release 2"}, 0, "swapped blue -> green (revision 2)"},
		{[]string{"swap", "--if-revision", "1"}, 1, "swap refused: the state is at revision 2, not 1"},
		{[]string{"rollback", "--json"}, 0, `"to": "blue"`},
		{[]string{"drain", "blue", addrs["blue"][0], "--reason", "kernel patch"}, 0, "drained blue/" + addrs["blue"][0] + " (revision 4)"},
		{[]string{"drain", "blue", addrs["blue"][0]}, 0, "nothing to do"},
		{[]string{"drain", "--dry-run", "blue", addrs["blue"][0]}, 0, "is already in effect; nothing would change"},
		{[]string{"drain", "--dry-run", "blue", addrs["blue"][1]}, 1, "would be refused: " + addrs["blue"][1] + " is the last routable instance"},
		{[]string{"status"}, 0, addrs["blue"][0] + "  up, drained"},
		{[]string{"ready", "blue", addrs["blue"][0]}, 0, "readied blue/" + addrs["blue"][0]},
		{[]string{"wait", "drained", "green", "--timeout", "60s"}, 0, "green drained in"},
		{[]string{"wait", "drained", "purple"}, 1, `no slot "purple"`},
		{[]string{"drain", "blue"}, 2, "missing ADDR"},
		{[]string{"history", "--limit", "3"}, 0, "ready"},
	}
	for _, s := range steps {
		code, out := cli(t, sw, s.args...)
		if code != s.code || !strings.Contains(out, s.want) {
			t.Fatalf("vipswap %s: exit %d, output:\n%s\nwant exit %d and %q", strings.Join(s.args, " "), code, out, s.code, s.want)
		}
	}

	_, out := cli(t, sw, "history")
	for _, want := range []string{
		`swap\s+blue→green\s+applied\s+2\b.*release 2`,
		`swap\s+green\s+refused: the state is at revision 2, not 1`,
		`drain\s+blue/` + regexp.QuoteMeta(addrs["blue"][0]) + `\s+applied\s+4.*kernel patch`,
		`seed\s+→blue\s+applied\s+1`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("history lacks a line matching %s:\n%s", want, out)
		}
	}
}

// TestAdminAddressHints (issue 16, point 3): a bare host:port works as
// --admin; an address that is not a vipswap's admin API says so.
func TestAdminAddressHints(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	bare := strings.TrimPrefix(sw.Admin, "http://")
	p := vstest.Start(t, vstest.Binary(t), "status", "--admin", bare)
	if code := p.Wait(t, 30*time.Second); code != 0 || !strings.Contains(p.Output(), "revision") {
		t.Fatalf("status --admin %s: exit %d:\n%s", bare, code, p.Output())
	}
	// The prod listener answers, but it is not an admin API.
	p = vstest.Start(t, vstest.Binary(t), "status", "--admin", strings.TrimPrefix(sw.Prod, "http://"))
	if code := p.Wait(t, 30*time.Second); code != 1 || !strings.Contains(p.Output(), "is this vipswap's admin address?") {
		t.Fatalf("status against prod: exit %d:\n%s", code, p.Output())
	}
	// A server that answers 200 with JSON to anything must not pass for
	// a swap that was applied (or a change already in effect).
	anything := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok": true}`)
	}))
	defer anything.Close()
	for _, verb := range [][]string{{"swap"}, {"status"}, {"reload"}, {"shift", "--to", "green", "--weight", "10"}} {
		p = vstest.Start(t, vstest.Binary(t), append(verb, "--admin", anything.URL)...)
		if code := p.Wait(t, 30*time.Second); code != 1 || !strings.Contains(p.Output(), "is this vipswap's admin address?") {
			t.Fatalf("%s against a server that answers 200 to anything: exit %d:\n%s", verb[0], code, p.Output())
		}
	}
	if st, _ := sw.Client.Status(context.Background()); st.Active != "blue" {
		t.Fatalf("active is %s; nothing should have changed", st.Active)
	}
}
