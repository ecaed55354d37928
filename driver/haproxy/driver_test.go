package haproxy

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/haproxytest"
	"github.com/vipswap/vipswap/route"
)

// fake is a runtime API socket that answers each command with answer and
// records the commands it got.
type fake struct {
	path string
	mu   sync.Mutex
	cmds []string
}

func startFake(t *testing.T, answer func(cmd string) string) *fake {
	t.Helper()
	f := &fake{}
	f.path = haproxytest.ServeSocket(t, func(cmd string) string {
		f.mu.Lock()
		f.cmds = append(f.cmds, cmd)
		f.mu.Unlock()
		return answer(cmd)
	})
	return f
}

func (f *fake) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

// sane answers like an HAProxy with backends be_blue and be_green, one
// ready server each, and prod on blue.
func sane(cmd string) string {
	switch {
	case cmd == "show info":
		return "Name: HAProxy\nPid: 7\n\n"
	case cmd == "show backend":
		return "# name\nbe_blue\nbe_green\nbe_none\n\n"
	case cmd == "show servers state":
		return "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port\n" +
			"3 be_blue 1 s1 127.0.0.1 2 0 1 1 10 6 3 4 6 0 0 0 - 9001\n" +
			"4 be_green 1 s1 127.0.0.1 2 0 1 1 10 6 3 4 6 0 0 0 - 9002\n\n"
	case strings.HasPrefix(cmd, "show map /prod.map"):
		return "0x1 0:9999 be_blue\n\n"
	case strings.HasPrefix(cmd, "show map /stage.map"):
		return "0x1 0:9999 be_green\n\n"
	case strings.HasPrefix(cmd, "prepare map"):
		return "New version created: 7\n\n"
	}
	return "\n"
}

// table routes prod to blue (or to slot) and stage to green.
func table(prod string) *route.Table {
	blue, green := route.NewInstance("blue", "127.0.0.1:9001"), route.NewInstance("green", "127.0.0.1:9002")
	return route.Build(route.Spec{
		Revision:  2,
		Listeners: [2][]route.Weighted{{{Slot: prod, Weight: 1000}}, {{Slot: "green", Weight: 1000}}},
		Routable:  map[string][]*route.Instance{"blue": {blue}, "green": {green}},
	})
}

// newDriver returns a driver of f whose commands only give up on a hung
// answer: a busy machine may be slow.
func newDriver(f *fake) *Driver {
	return New(Options{Runtime: Runtime{Addr: f.path, Timeout: 10 * time.Second}, Maps: [2]string{"/prod.map", "/stage.map"}, Interval: time.Hour})
}

func TestApplyInSync(t *testing.T) {
	f := startFake(t, sane)
	d := newDriver(f)
	defer d.Close()
	if err := d.Apply(table("blue")); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.commands() {
		if !strings.HasPrefix(c, "show ") {
			t.Fatalf("HAProxy already showed the table, yet the driver sent %q", c)
		}
	}
	if st := d.Status(); !st.Applied || st.Revision != 2 {
		t.Fatalf("status %+v", st)
	}
}

// TestBrokenAnswers: whatever HAProxy answers wrongly, Apply fails with an
// error naming the command and the answer, and sends no change after it.
func TestBrokenAnswers(t *testing.T) {
	cases := []struct {
		name, broken, answer, want string
	}{
		{"servers state garbage", "show servers state", "garbage\n\n", `"show servers state"`},
		{"servers state truncated", "show servers state", "1\n# be_id be_name srv_id srv_name srv_addr\n3 be_blue 1 s1\n\n", "no srv_addr"},
		{"map garbage", "show map /prod.map", "Unknown map identifier. Please use #<id> or <file>.\n\n", "Unknown map identifier"},
		{"prepare refused", "prepare map /prod.map", "Unknown command\n\n", `"prepare map /prod.map"`},
		{"commit refused", "commit map @7 /prod.map", "Unknown version\n\n", "Unknown version"},
		{"backend list garbage", "show backend", "be blue\n\n", `"show backend"`},
		{"no backend", "show backend", "# name\nbe_blue\n\n", "no backend be_green"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, func(cmd string) string {
				if cmd == tc.broken {
					return tc.answer
				}
				return sane(cmd)
			})
			d := newDriver(f)
			defer d.Close()
			err := d.Apply(table("green")) // prod must move: a map change is needed
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply: %v; want an error with %s", err, tc.want)
			}
			cmds := f.commands()
			for i, c := range cmds {
				// Reading the statistics after a failed apply is no change.
				if c == tc.broken && slices.ContainsFunc(cmds[i+1:], func(c string) bool { return c != "show stat -1 4 -1" }) {
					t.Fatalf("after the broken answer to %q the driver went on: %q", c, cmds[i+1:])
				}
			}
			if st := d.Status(); st.Applied || st.Error == "" {
				t.Fatalf("status after a failed apply: %+v", st)
			}
		})
	}
}

// TestHostileSocket: a runtime API that never stops talking, or never
// answers, fails its command within the bounds.
func TestHostileSocket(t *testing.T) {
	big := strings.Repeat("x", maxAnswer+10)
	f := startFake(t, func(string) string { return big })
	r := Runtime{Addr: f.path, Timeout: time.Minute} // only ends a hung read
	var ae *AnswerError
	if _, err := r.Do(context.Background(), "show info"); !errors.As(err, &ae) {
		t.Fatalf("an endless answer: %v; want an AnswerError", err)
	}

	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "silent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	r = Runtime{Addr: filepath.Join(dir, "silent.sock"), Timeout: 200 * time.Millisecond}
	start := time.Now()
	within, cancel := context.WithTimeout(context.Background(), 30*time.Second) // far beyond r.Timeout
	_, err = r.Do(within, "show info")
	cancel()
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("a silent socket: %v after %s; want UnreachableError at the timeout", err, time.Since(start))
	}
	t.Logf("a silent socket: %v after %s (timeout 200ms)", err, time.Since(start).Round(time.Millisecond))
	if _, err := r.Do(context.Background(), "show info; shutdown sessions"); err == nil {
		t.Fatal("a command with ';' was sent")
	}
	r = Runtime{Addr: filepath.Join(dir, "nothing.sock")}
	if _, err := r.Do(context.Background(), "show info"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("no socket: %v", err)
	}
}

// TestWeightsToRanges: weights become ranges of the 10000 draws that add
// up, in order, with nothing lost to rounding.
func TestWeightsToRanges(t *testing.T) {
	d := &Driver{}
	blue, green := route.NewInstance("blue", "127.0.0.1:9001"), route.NewInstance("green", "127.0.0.1:9002")
	tb := route.Build(route.Spec{
		Listeners: [2][]route.Weighted{{{Slot: "blue", Weight: 667}, {Slot: "green", Weight: 333}}, {{Slot: "green", Weight: 1000}}},
		Routable:  map[string][]*route.Instance{"blue": {blue}},
		Members:   map[string][]*route.Instance{"green": {green}},
	})
	w := d.desire(tb)
	if got := describeMap(w.maps[0]); got != "0:6669 be_blue, 6670:9999 be_green" {
		t.Fatalf("prod map %s", got)
	}
	if w.servers[serverKey{"be_blue", "127.0.0.1:9001"}] != "ready" || w.servers[serverKey{"be_green", "127.0.0.1:9002"}] != "drain" {
		t.Fatalf("servers %v: want the routable one ready, the other drained", w.servers)
	}
}
