package node

import (
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/wire"
)

// serves waits until a managed instance at addr answers as slot's.
func serves(t *testing.T, slot, addr string) {
	t.Helper()
	vstest.WaitFor(t, 30*time.Second, func() error {
		got, err := get("http://" + addr + "/")
		if err != nil {
			return err
		}
		if want := slot + " " + addr; got != want {
			return fmt.Errorf("%s answered %q, want %q", addr, got, want)
		}
		return nil
	})
}

// stopped fails the test unless nothing listens on addr any more.
func stopped(t *testing.T, what, addr string) {
	t.Helper()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s (%s) still listens", what, addr)
	}
}

// sameMembers reports whether a and b list the same slots and instances.
func sameMembers(a, b map[string][]string) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}

// started returns the address of the instances the node's log says it
// started for slot, newest last.
func started(log, slot string) []string {
	var out []string
	re := regexp.MustCompile(`msg="started instances" slot=` + slot + ` instances="?\[([^\]"]+)\]`)
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		out = append(out, strings.Fields(m[1])...)
	}
	return out
}

// TestReloadRefusedLeavesTheNodeAsItWas: node.reload of a file that the
// controller refuses (blue, which takes prod, would keep only an address
// nobody listens on) and that adds a run: slot, violet, changes nothing:
// violet's instance, started for the controller, is stopped again and is
// not among the supervisor's groups; the running groups, the members, the
// state's revision and the configuration in force are the same, and prod
// and stage still send every request to blue and green.
func TestReloadRefusedLeavesTheNodeAsItWas(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	blue, green := instance(t, "blue"), instance(t, "green")
	path := writeConfig(t, dir, staticSlot("blue", blue), staticSlot("green", green), managedSlot("red"))
	n, log := startNode(t, path)
	waitAnswer(t, n.prodLn, "blue "+blue)
	waitAnswer(t, n.stageLn, "green "+green)
	groups := n.sup.current()
	if len(groups) != 1 || groups["red"] == nil {
		t.Fatalf("supervisor's groups after start: %v; want red's alone", groups)
	}
	red := groups["red"].Addrs()[0]
	serves(t, "red", red)
	before, revision, cfg := members(n), n.ctrl.Status().Revision, n.cfg

	writeConfig(t, dir, staticSlot("blue", closedAddr(t)), staticSlot("green", green), managedSlot("red"), managedSlot("violet"))
	res, err := n.reload(t.Context(), wire.ChangeRequest{Actor: "test"})
	if err == nil || res.Applied || !strings.Contains(err.Error(), "slots.blue takes prod traffic") {
		t.Fatalf("reload of a file that empties prod: %+v, %v; want it refused naming slots.blue", res, err)
	}
	violet := started(log.String(), "violet")
	if len(violet) != 1 {
		t.Fatalf("the refused reload started violet's instances %v; want one (log:\n%s)", violet, log)
	}
	if now := n.sup.current(); !maps.Equal(now, groups) {
		t.Errorf("supervisor's groups after the refused reload: %v; want %v", now, groups)
	}
	serves(t, "red", red)
	if now := members(n); !sameMembers(now, before) {
		t.Errorf("members after the refused reload: %v; want %v", now, before)
	}
	if now := n.ctrl.Status().Revision; now != revision {
		t.Errorf("state revision %d -> %d after the refused reload", revision, now)
	}
	n.mu.Lock()
	same := n.cfg == cfg
	n.mu.Unlock()
	if !same {
		t.Error("the refused reload replaced the configuration in force")
	}
	for range 20 {
		for _, c := range []struct {
			ln   net.Listener
			want string
		}{{n.prodLn, "blue " + blue}, {n.stageLn, "green " + green}} {
			if got, err := get(listenerURL(c.ln)); err != nil || got != c.want {
				t.Fatalf("after the refused reload, %s answered %q, %v; want %q", c.ln.Addr(), got, err, c.want)
			}
		}
	}
	// Last, so that a violet instance left running has had time to listen.
	stopped(t, "violet's instance, started by the refused reload", violet[0])
}

// TestReloadAppliedChangesRouting: node.reload of a file that adds an
// instance to blue, adds a run: slot (violet) and removes one (red)
// applies it all: it is recorded as applied, prod reaches the new
// instance, violet's instance runs and is a member, red's is stopped and
// gone from the supervisor and the members.
func TestReloadAppliedChangesRouting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	blue, green := instance(t, "blue"), instance(t, "green")
	path := writeConfig(t, dir, staticSlot("blue", blue), staticSlot("green", green), managedSlot("red"))
	n, _ := startNode(t, path)
	waitAnswer(t, n.prodLn, "blue "+blue)
	red := n.sup.Addrs("red")
	if len(red) != 1 {
		t.Fatalf("red's instances after start: %v; want one", red)
	}
	serves(t, "red", red[0])

	blue2 := instance(t, "blue")
	writeConfig(t, dir, staticSlot("blue", blue, blue2), staticSlot("green", green), managedSlot("violet"))
	res, err := n.reload(t.Context(), wire.ChangeRequest{Actor: "test"})
	if err != nil || !res.Applied {
		t.Fatalf("reload: %+v, %v; want it applied", res, err)
	}
	t.Logf("changes: %q", res.Changes)
	if h, err := n.ctrl.History(t.Context(), 0, 1); err != nil || len(h) != 1 || h[0].ID != res.HistoryID || h[0].Result != "applied" {
		t.Errorf("newest history entry: %+v, %v; want reload %d, applied", h, err, res.HistoryID)
	}
	waitAnswer(t, n.prodLn, "blue "+blue2)
	stopped(t, "red's instance, its slot removed", red[0])
	groups := n.sup.current()
	if groups["red"] != nil || groups["violet"] == nil || len(groups) != 1 {
		t.Fatalf("supervisor's groups after the reload: %v; want violet's alone", groups)
	}
	violet := groups["violet"].Addrs()
	serves(t, "violet", violet[0])
	want := map[string][]string{"blue": {blue, blue2}, "green": {green}, "violet": violet}
	slices.Sort(want["blue"])
	if now := members(n); !sameMembers(now, want) {
		t.Errorf("members after the reload: %v; want %v", now, want)
	}
}
