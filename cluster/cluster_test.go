package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/cluster"
	"github.com/vipswap/vipswap/internal/etcdtest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/store/etcd"
)

// tick is the follower's read interval in these tests: short, so a test
// waits for reads without waiting long.
const tick = 20 * time.Millisecond

var names = []string{"blue", "green"}

// adoption is one call of Node.Adopt.
type adoption struct {
	active        string
	rev           store.Revision
	authoritative bool
	gen           uint64
}

// node is the controller's side as the follower sees it, recording what
// it is asked to do. It is the package's own interface: nothing here
// stands in for something that could run.
type node struct {
	mu         sync.Mutex
	gen        uint64
	adopted    []adoption
	writeBacks int
	refused    []error
}

func (n *node) Generation() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gen
}

func (n *node) Adopt(st state.State, rev store.Revision, authoritative bool, gen uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.adopted = append(n.adopted, adoption{st.Active, rev, authoritative, gen})
}

func (n *node) WriteBack() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.writeBacks++
}

func (n *node) NotApplied(rev store.Revision, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.refused = append(n.refused, err)
}

// find returns the first adoption that matches, or an error saying what
// was adopted.
func (n *node) find(want func(adoption) bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range n.adopted {
		if want(a) {
			return nil
		}
	}
	return fmt.Errorf("adopted %+v", n.adopted)
}

// logs is a logger whose lines a test reads.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logs) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// counted is a store that counts the reads that returned.
type counted struct {
	store.Store
	loads atomic.Int64
}

func (c *counted) Load(ctx context.Context) (state.State, store.Revision, error) {
	defer c.loads.Add(1)
	return c.Store.Load(ctx)
}

// follow runs a follower of s for n until the test ends.
func follow(t *testing.T, s cluster.Source, reach *cluster.Reachability, n cluster.Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cluster.Follower{Store: s, Reach: reach, Node: n, Tick: tick}.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// openBolt opens a bolt store in the test's directory.
func openBolt(t *testing.T) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// commit stores a state whose active slot is active at the revision after
// rev, as another node would.
func commit(t *testing.T, s store.Store, rev store.Revision, active string) store.Revision {
	t.Helper()
	st, err := state.Seed(active, names)
	if err != nil {
		t.Fatal(err)
	}
	next, _, err := s.CompareAndSwap(context.Background(), rev, st, store.Entry{Time: time.Now().UTC(), Actor: "other", Operation: "swap", To: active, Result: store.Applied})
	if err != nil {
		t.Fatal(err)
	}
	return next
}

// A state another node commits reaches the node from the watch (not
// authoritative), and the read every tick finds it too, with the
// generation the node had when the read started.
func TestFollowAdoptsWhatIsCommitted(t *testing.T) {
	s := openBolt(t)
	rev := commit(t, s, 0, "blue")
	n := &node{gen: 7}
	var l logs
	reach := cluster.NewReachability(l.logger(), false, nil)
	follow(t, s, reach, n)
	vstest.WaitFor(t, 10*time.Second, func() error {
		return n.find(func(a adoption) bool { return a.authoritative && a.rev == rev && a.gen == 7 })
	})
	rev = commit(t, s, rev, "green")
	vstest.WaitFor(t, 10*time.Second, func() error {
		return n.find(func(a adoption) bool { return !a.authoritative && a.rev == rev && a.active == "green" })
	})
	n.mu.Lock()
	if n.writeBacks != 0 || len(n.refused) != 0 {
		t.Errorf("write-backs %d, refused %v; want none from a store that holds a state", n.writeBacks, n.refused)
	}
	n.mu.Unlock()
	if !reach.Status().Reachable || strings.Contains(l.String(), "unreachable") {
		t.Errorf("a store that answers is said unreachable: %+v, logs %s", reach.Status(), l.String())
	}
}

// A store that holds no state (etcd recreated empty) has the node write
// back the one in force; it adopts nothing.
func TestFollowWritesBackWhenTheStoreIsEmpty(t *testing.T) {
	s := openBolt(t)
	n := &node{}
	follow(t, s, cluster.NewReachability(slog.New(slog.DiscardHandler), false, nil), n)
	vstest.WaitFor(t, 10*time.Second, func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.writeBacks < 2 { // each read of the empty store asks again
			return fmt.Errorf("%d write-backs", n.writeBacks)
		}
		return nil
	})
	if err := n.find(func(adoption) bool { return true }); err == nil {
		t.Error("adopted a state from a store that holds none")
	}
}

// A read that fails with store.ErrUnavailable marks the store
// unreachable, logged once, and changes are refused with the reason; a
// later read that succeeds marks it reachable again. This runs a real
// etcd and kills it.
func TestFollowTracksReachability(t *testing.T) {
	e := etcdtest.Start(t)
	s, err := etcd.Open(etcd.Options{Endpoints: []string{e.Endpoint}, Prefix: "/t/", DialTimeout: time.Second, RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rev := commit(t, s, 0, "blue")
	var l logs
	reach := cluster.NewReachability(l.logger(), false, nil)
	n := &node{}
	c := &counted{Store: s}
	follow(t, c, reach, n)
	vstest.WaitFor(t, 10*time.Second, func() error {
		return n.find(func(a adoption) bool { return a.authoritative && a.rev == rev })
	})
	if err := reach.Unreachable("swap"); err != nil {
		t.Fatalf("reachable store refuses: %v", err)
	}

	e.Kill(t)
	vstest.WaitFor(t, 20*time.Second, func() error {
		if st := reach.Status(); st.Reachable || st.Error == "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	refusal := reach.Unreachable("swap")
	if refusal == nil || !strings.Contains(refusal.Error(), "swap not applied: the state store is unreachable") {
		t.Errorf("a change while the store is out of reach gets %v", refusal)
	}
	failed := c.loads.Load()
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := c.loads.Load(); n < failed+2 {
			return fmt.Errorf("%d more reads", n-failed)
		}
		return nil
	})
	if n := strings.Count(l.String(), "state store unreachable"); n != 1 {
		t.Errorf("the store's loss logged %d times over several failed reads, want once", n)
	}
	n.mu.Lock()
	refused := len(n.refused)
	n.mu.Unlock()
	if refused != 0 {
		t.Errorf("an unreachable store counted as holding a state the node refuses: %d", refused)
	}

	e.Start(t)
	vstest.WaitFor(t, 30*time.Second, func() error {
		if st := reach.Status(); !st.Reachable || st.Error != "" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if !strings.Contains(l.String(), "state store reachable again") {
		t.Errorf("the store's return is not logged: %s", l.String())
	}
	if err := reach.Unreachable("swap"); err != nil {
		t.Errorf("a change once the store is back gets %v", err)
	}
}

// Only a store out of reach is unreachable: one that answers with an
// error is not, and a state the node does not apply is logged once per
// revision and reason, and forgotten once one is applied.
func TestReachabilityAnswersAndRefusals(t *testing.T) {
	var l logs
	reach := cluster.NewReachability(l.logger(), false, nil)
	reach.Answered(errors.New("etcd: the state key holds garbage"))
	if !reach.Status().Reachable {
		t.Fatal("a store that answered with an error is said unreachable")
	}
	bad := errors.New("it does not fit this node's configuration: no slot red")
	reach.NotApplied(9, 8, bad)
	reach.NotApplied(9, 8, bad)
	if c := strings.Count(l.String(), "does not apply"); c != 1 {
		t.Errorf("a refused state logged %d times, want once: %s", c, l.String())
	}
	if n := reach.Status().NotApplied; n == nil || n.Revision != 9 || n.Error != bad.Error() {
		t.Errorf("status says %+v", n)
	}
	reach.NotApplied(10, 8, bad)
	if c := strings.Count(l.String(), "does not apply"); c != 2 {
		t.Errorf("a refused later revision logged %d times in all, want twice", c)
	}
	reach.Applied()
	if n := reach.Status().NotApplied; n != nil {
		t.Errorf("applied, status still says %+v", n)
	}
}

// A node that starts from its local copy says so, with a reason, until it
// puts a stored state in force.
func TestReachabilityFromTheLocalCopy(t *testing.T) {
	reach := cluster.NewReachability(slog.New(slog.DiscardHandler), true, nil)
	st := reach.Status()
	if st.Reachable || !st.LocalCopy || st.Error != "not reached since this node started" {
		t.Fatalf("status %+v", st)
	}
	if err := reach.Unreachable("reload"); err == nil || !strings.Contains(err.Error(), "serves its local copy") {
		t.Errorf("a change gets %v", err)
	}
	reach.LeaveCopy()
	if reach.ServingCopy() {
		t.Error("still serving the copy")
	}
}

// LoadOrSeed seeds an empty store, and a second node's start reads the
// first's state instead of seeding its own.
func TestLoadOrSeedSeedsOnce(t *testing.T) {
	s := openBolt(t)
	log := slog.New(slog.DiscardHandler)
	st, rev, fromCopy, err := cluster.LoadOrSeed(context.Background(), s, nil, log, "green", names)
	if err != nil || fromCopy || st.Active != "green" || rev == 0 || st.AffinityKey == "" {
		t.Fatalf("seeded %+v@%d copy=%v, %v", st, rev, fromCopy, err)
	}
	again, rev2, _, err := cluster.LoadOrSeed(context.Background(), s, nil, log, "blue", names)
	if err != nil || rev2 != rev || again.Active != "green" || again.AffinityKey != st.AffinityKey {
		t.Fatalf("second start got %+v@%d, %v; want the seeded state at %d", again, rev2, err, rev)
	}
	if _, _, _, err := cluster.LoadOrSeed(context.Background(), openBolt(t), nil, log, "red", names); err == nil || !strings.Contains(err.Error(), "red") {
		t.Errorf("seeding with an unknown active slot gives %v", err)
	}
}

// A node that starts while etcd is out of reach serves the local copy of
// the last state it kept.
func TestLoadOrSeedFallsBackOnTheLocalCopy(t *testing.T) {
	e := etcdtest.Start(t)
	s, err := etcd.Open(etcd.Options{Endpoints: []string{e.Endpoint}, Prefix: "/t/", DialTimeout: time.Second,
		RequestTimeout: 300 * time.Millisecond, LocalCopy: filepath.Join(t.TempDir(), "copy.json")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var l logs
	st, rev, _, err := cluster.LoadOrSeed(context.Background(), s, s, l.logger(), "green", names)
	if err != nil {
		t.Fatal(err)
	}
	s.Keep(st, rev)
	e.Kill(t)
	got, gotRev, fromCopy, err := cluster.LoadOrSeed(context.Background(), s, s, l.logger(), "blue", names)
	if err != nil || !fromCopy || gotRev != rev || got.Active != "green" {
		t.Fatalf("start without etcd got %+v@%d copy=%v, %v; want the copy of green@%d", got, gotRev, fromCopy, err, rev)
	}
	if !strings.Contains(l.String(), "serving the local copy") {
		t.Errorf("not logged: %s", l.String())
	}
	if _, _, _, err := cluster.LoadOrSeed(context.Background(), s, nil, l.logger(), "blue", names); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("without a local copy: %v, want unavailable", err)
	}
}
