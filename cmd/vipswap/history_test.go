package main

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// TestHistoryIsSafeToPrint: reasons are anyone's text; vipswap history
// shows their control characters escaped, so a reason cannot clear the
// screen, recolour it, forge a line or reverse the text after it. Before,
// they reached the terminal raw. The pages of a long history are reached
// with --before.
func TestHistoryIsSafeToPrint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs)))
	sw.WaitHealthy(t)
	ctx := context.Background()
	hostile := "ok\x1b[2J\x1b[31mred\r\n99  2026-01-01 00:00:00  admin  swap  fake\u202eevil\u009b31m\x07"
	if _, err := sw.Client.Swap(ctx, wire.ChangeRequest{Reason: hostile}); err != nil {
		t.Fatal(err)
	}
	_, err := sw.Client.Drain(ctx, "blue", addrs["blue"][0], wire.ChangeRequest{Reason: "\x1b]0;owned\x07"})
	if err == nil {
		t.Fatal("draining the last instance of the standby slot... was allowed")
	}
	code, out := cli(t, sw, "history")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, bad := range []string{"\x1b", "\r", "\u202e", "\u009b", "\x07"} {
		if strings.Contains(out, bad) {
			t.Errorf("history printed %q raw:\n%q", bad, out)
		}
	}
	if !strings.Contains(out, `ok\x1b[2J\x1b[31mred\x0d\x0a99  2026`) || !strings.Contains(out, `fake\u202eevil\x9b31m\x07`) {
		t.Errorf("the reason is not shown escaped:\n%s", out)
	}
	if n := len(regexp.MustCompile(`(?m)^\d+ `).FindAllString(out, -1)); n != 3 {
		t.Errorf("%d history lines, want 3 (seed, swap, refused drain):\n%s", n, out)
	}

	// Pages.
	for range 4 {
		sw.Client.Swap(ctx, wire.ChangeRequest{})
	}
	code, out = cli(t, sw, "history", "--limit", "3")
	m := regexp.MustCompile(`older entries: vipswap history --before (\d+)`).FindStringSubmatch(out)
	if code != 0 || m == nil || m[1] != "5" {
		t.Fatalf("history --limit 3: exit %d:\n%s\nwant a hint to --before 5", code, out)
	}
	code, out = cli(t, sw, "history", "--limit", "3", "--before", m[1])
	ids := regexp.MustCompile(`(?m)^(\d+) `).FindAllStringSubmatch(out, -1)
	if code != 0 || len(ids) != 3 || ids[0][1] != "4" || ids[2][1] != "2" || !strings.Contains(out, "--before 2") {
		t.Fatalf("history --before %s: exit %d:\n%s\nwant entries 4 to 2 and a hint to --before 2", m[1], code, out)
	}
}
