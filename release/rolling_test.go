package release_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/wire"
)

// TestRollingFailureKeepsTheSlotServing: a rolling update of the active
// slot whose new instance cannot start, or never passes the probe, or
// whose second instance cannot start again (mid-way), stops there: the
// failed instance gets the old version back and returns to rotation, the
// slot keeps its instances and run block, prod's client sees no failure,
// and the history entry survives export and import.
func TestRollingFailureKeepsTheSlotServing(t *testing.T) {
	cases := []struct {
		name    string
		req     wire.RollingRequest
		fail    int  // the instance (by position) whose replacement fails
		refused bool // its start is refused by the launcher, not by its command
		step    string
		want    string
	}{
		{name: "restart/the new version cannot start", req: wire.RollingRequest{Slot: "blue", Version: "1.1", Command: []string{"app", "--nostart"}, Timeout: long},
			step: "restart", want: "cannot start"},
		{name: "healthy/the new version never passes the probe", req: wire.RollingRequest{Slot: "blue", Version: "1.1", Command: []string{"app", "--sick"}, Timeout: short},
			step: "healthy", want: "L7STS 503"},
		{name: "restart/the second instance cannot start", req: wire.RollingRequest{Slot: "blue", Version: "1.1", Timeout: long},
			fail: 1, refused: true, step: "restart", want: "cannot start"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each case has its own controller, proxy, store and instances
			began := time.Now()
			f := newFixture(t)
			addrs := f.apps.Addrs("blue")
			if c.refused {
				f.apps.refuseReplace(addrs[c.fail])
			}
			before := f.view()
			l := f.startLoad()
			p, err := f.runner.Rolling(c.req)
			if err != nil {
				t.Fatalf("rolling refused before it started: %v", err)
			}
			p = f.wait(p.ID)
			got := l.end()
			t.Logf("%s: rolling %s, %d prod requests answered %v", time.Since(began).Round(time.Millisecond), p.State, got.ok, got.by)

			step := c.step + " " + addrs[c.fail]
			if p.State != "failed" || p.FailedStep != step || !strings.Contains(p.Error, c.want) {
				t.Fatalf("rolling %s at step %q: %s; want failed at %q saying %q\nsteps: %+v", p.State, p.FailedStep, p.Error, step, c.want, p.Steps)
			}
			oneLine(t, "error", p.Error)
			if last := p.Steps[len(p.Steps)-1]; last.Name != "restore "+addrs[c.fail] || last.Result != "ok" {
				t.Errorf("last step %+v; want the old version restored on %s", last, addrs[c.fail])
			}
			if p.Failed != 0 || got.failed != 0 {
				t.Errorf("prod failed %d requests (release counted %d): %v", got.failed, p.Failed, got.errs)
			}
			if s, _ := f.slot("blue"); s.Routable != 2 {
				t.Errorf("blue has %d routable instances after the failed rolling update, want both", s.Routable)
			}
			// Instances before the failed one run the new version (a
			// rolling update does not undo what it finished); the failed
			// one and those after it run the old.
			want := map[string]string{}
			for n, a := range addrs {
				want[a] = "1.0"
				if n < c.fail {
					want[a] = "1.1"
				}
			}
			if v := f.apps.versions("blue"); !maps.Equal(v, want) {
				t.Errorf("blue's instances run %v, want %v", v, want)
			}
			for answer := range got.by {
				if !slices.Contains([]string{"blue 1.0", "blue 1.1"}, answer) {
					t.Errorf("prod answered %v; want blue alone", got.by)
				}
			}
			same(t, before, f.view())
			checkEntry(t, f, p, "rolling")
		})
	}
}
