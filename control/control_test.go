package control_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/wire"
)

// recorder is a data plane that keeps every table it was given.
type recorder struct {
	mu     sync.Mutex // guards tables
	tables []*route.Table
}

func (r *recorder) Apply(t *route.Table) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tables = append(r.tables, t)
	return nil
}

// history returns the tables applied so far.
func (r *recorder) history() []*route.Table {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*route.Table(nil), r.tables...)
}

// last returns the table in force.
func (r *recorder) last() *route.Table {
	h := r.history()
	return h[len(h)-1]
}

// slotServer answers the probe contract for slot.
func slotServer(t *testing.T, slot string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("slot") != slot {
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

type fixture struct {
	ctrl  *control.Controller
	plane *recorder
	store *bolt.Store
	path  string
}

// newFixture starts a controller over slots blue and green, its state in
// a bolt file, its tables recorded; more planes get them after.
func newFixture(t *testing.T, blue, green []string, more ...control.DataPlane) *fixture {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	plane := &recorder{}
	ctrl, err := control.New(context.Background(), control.Config{
		Slots:  []control.Slot{{Name: "blue", Addrs: blue}, {Name: "green", Addrs: green}},
		Active: "blue",
		Store:  st,
		Health: health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
		Planes: append([]control.DataPlane{plane}, more...),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.Close)
	return &fixture{ctrl: ctrl, plane: plane, store: st, path: path}
}

// waitHealthy waits until slot has n healthy instances, and the data
// plane's table routes to as many as the controller says are routable (a
// health transition reaches the planes from their own goroutines).
func (f *fixture) waitHealthy(t *testing.T, slot string, n int) {
	t.Helper()
	vstest.WaitFor(t, 5*time.Second, func() error {
		for _, s := range f.ctrl.Status().Slots {
			if s.Name != slot || s.Healthy != n {
				continue
			}
			if got := f.plane.last().Named(slot); got == nil || len(got.Instances()) != s.Routable {
				return fmt.Errorf("slot %s: the data plane has not the table with its %d routable instances yet", slot, s.Routable)
			}
			return nil
		}
		return fmt.Errorf("slot %s has not %d healthy instances", slot, n)
	})
}

func TestFirstStartSeedsTheStore(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	got, rev, err := f.store.Load(context.Background())
	if err != nil || got.Active != "blue" || got.Standby != "green" || rev == 0 {
		t.Fatalf("store holds %+v@%d, %v; want blue/green seeded", got, rev, err)
	}
}

func TestSwapPublishesOneTable(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	res, err := f.ctrl.Swap(context.Background(), wire.ChangeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.From != "blue" || res.To != "green" {
		t.Fatalf("got %+v", res)
	}
	tb := f.plane.last()
	if tb.Revision != res.Revision || tb.Slot(route.Prod).Name != "green" || tb.Slot(route.Stage).Name != "blue" {
		t.Fatalf("published table rev %d prod %s: want rev %d prod green", tb.Revision, tb.Slot(route.Prod).Name, res.Revision)
	}
	if stored, rev, _ := f.store.Load(context.Background()); stored.Active != "green" || uint64(rev) != res.Revision {
		t.Fatalf("store holds %+v@%d", stored, rev)
	}
}

func TestUnhealthyInstancesAreNotRoutable(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue"), slotServer(t, "green")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "blue", 1)
	tb := f.plane.last()
	insts := tb.Slot(route.Prod).Instances()
	if len(insts) != 1 {
		t.Fatalf("prod routes to %d instances, want only the one that answers for blue", len(insts))
	}
}

func TestRefusedSwapChangesNothing(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{"127.0.0.1:1"})
	f.waitHealthy(t, "blue", 1)
	before := f.ctrl.Status()
	_, err := f.ctrl.Swap(context.Background(), wire.ChangeRequest{})
	var apiErr *control.Error
	if !errors.As(err, &apiErr) || apiErr.Kind != control.Conflict {
		t.Fatalf("got %v, want a 409 Error", err)
	}
	if after := f.ctrl.Status(); after.Revision != before.Revision || after.Active != before.Active {
		t.Fatalf("state moved: %d/%s -> %d/%s", before.Revision, before.Active, after.Revision, after.Active)
	}
}

func TestFailedStoreWriteChangesNothing(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	before := f.ctrl.Status()
	f.store.Close() // every write now fails
	_, err := f.ctrl.Swap(context.Background(), wire.ChangeRequest{})
	if err == nil || !strings.Contains(err.Error(), "swap not applied") {
		t.Fatalf("got %v, want the store error", err)
	}
	if after := f.ctrl.Status(); after.Active != "blue" || after.Revision != before.Revision {
		t.Fatalf("state moved to %s@%d although the store refused", after.Active, after.Revision)
	}
	if tb := f.plane.last(); tb.Slot(route.Prod).Name != "blue" {
		t.Fatalf("data plane routes prod to %s after a failed swap", tb.Slot(route.Prod).Name)
	}
}

func TestStoredStateMustFitTheConfig(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.ctrl.Close()
	_, err := control.New(context.Background(), control.Config{
		Slots:  []control.Slot{{Name: "blue", Addrs: []string{"127.0.0.1:1"}}, {Name: "red", Addrs: []string{"127.0.0.1:2"}}},
		Active: "blue",
		Store:  f.store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), `"green"`) {
		t.Fatalf("got %v, want an error naming the missing slot green", err)
	}
}

func TestRefusedInstanceIsTakenOutAndComesBack(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "blue", 1)
	// Health reaches the data planes from the controller's flusher, just
	// after status shows it.
	vstest.WaitFor(t, 5*time.Second, func() error {
		if len(f.plane.history()) == 0 || len(f.plane.last().Slot(route.Prod).Instances()) == 0 {
			return errors.New("no table routes to blue yet")
		}
		return nil
	})
	before := len(f.plane.history())
	inst := f.plane.last().Slot(route.Prod).Instances()[0]
	f.ctrl.InstanceRefused(inst)
	// The mark-down publishes a table without the instance; the next
	// passing probe (it still answers) publishes one with it again.
	vstest.WaitFor(t, 5*time.Second, func() error {
		out := false
		for _, tb := range f.plane.history()[before:] {
			n := len(tb.Slot(route.Prod).Instances())
			if n == 0 {
				out = true
			} else if out {
				return nil
			}
		}
		return fmt.Errorf("taken out: %v; not back yet", out)
	})
}

// TestDryRunWithStaleRevisionIsNotRecorded (issue 10, point 7): a dry run
// changes nothing, the history included, even when it is refused.
func TestDryRunWithStaleRevisionIsNotRecorded(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	before, err := f.store.History(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	stale := uint64(999)
	_, err = f.ctrl.Swap(context.Background(), wire.ChangeRequest{DryRun: true, IfRevision: &stale})
	var apiErr *control.Error
	if !errors.As(err, &apiErr) || apiErr.Kind != control.Conflict {
		t.Fatalf("got %v, want a 409", err)
	}
	after, err := f.store.History(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("history grew from %d to %d entries", len(before), len(after))
	}
}

// slowStore is a real store whose compare-and-swap waits for release, as a
// slow disk or a distant etcd would.
type slowStore struct {
	*bolt.Store
	entered chan struct{}
	release chan struct{}
}

func (s *slowStore) CompareAndSwap(ctx context.Context, expected store.Revision, st state.State, e store.Entry) (store.Revision, store.Entry, error) {
	if e.Operation == "swap" {
		close(s.entered)
		<-s.release
	}
	return s.Store.CompareAndSwap(ctx, expected, st, e)
}

// A store write in progress holds up neither status reads nor health
// changes reaching the data plane: the controller's lock is not held
// across it.
func TestStoreWriteDoesNotHoldTheLock(t *testing.T) {
	b, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	slow := &slowStore{Store: b, entered: make(chan struct{}), release: make(chan struct{})}
	blueSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("slot") != "blue" {
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(blueSrv.Close)
	blue := []string{strings.TrimPrefix(blueSrv.URL, "http://"), slotServer(t, "blue")}
	plane := &recorder{}
	ctrl, err := control.New(context.Background(), control.Config{
		Slots:  []control.Slot{{Name: "blue", Addrs: blue}, {Name: "green", Addrs: []string{slotServer(t, "green")}}},
		Active: "blue", Store: slow, Planes: []control.DataPlane{plane},
		Health: health.Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.Close)
	f := &fixture{ctrl: ctrl, plane: plane}
	f.waitHealthy(t, "green", 1)
	f.waitHealthy(t, "blue", 2)

	swapped := make(chan error, 1)
	go func() {
		_, err := ctrl.Swap(context.Background(), wire.ChangeRequest{})
		swapped <- err
	}()
	<-slow.entered
	// While the swap's store write hangs: status answers, and a blue
	// instance going down reaches the data plane.
	blueSrv.Close()
	f.waitHealthy(t, "blue", 1)
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := len(plane.last().Slot(route.Prod).Instances()); n != 1 {
			return fmt.Errorf("the data plane routes to %d blue instances, want 1", n)
		}
		return nil
	})
	if got := ctrl.Status().Active; got != "blue" {
		t.Fatalf("active is %s before the swap was written, want blue", got)
	}
	close(slow.release)
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	if got := ctrl.Status().Active; got != "green" {
		t.Fatalf("active is %s after the swap, want green", got)
	}
}

// TestSlotChurnReleasesEverything (issue 12): 1,000 slots added and
// removed at runtime leave no probe goroutine, instance or table entry
// behind.
func TestSlotChurnReleasesEverything(t *testing.T) {
	f := newFixture(t, []string{slotServer(t, "blue")}, []string{slotServer(t, "green")})
	f.waitHealthy(t, "green", 1)
	ctx := context.Background()
	addr := slotServer(t, "x")
	heap := func() uint64 {
		f.plane.mu.Lock()
		f.plane.tables = []*route.Table{f.plane.tables[len(f.plane.tables)-1]} // the recorder's own memory is not vipswap's
		f.plane.mu.Unlock()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	// A first cycle warms up what is allocated once.
	cycle := func(i int) {
		name := fmt.Sprintf("unit-%d", i)
		if _, err := f.ctrl.AddSlot(ctx, wire.AddSlotRequest{Name: name, Instances: []string{addr}}); err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
		if _, err := f.ctrl.RemoveSlot(ctx, name, wire.ChangeRequest{}); err != nil {
			t.Fatalf("remove %s: %v", name, err)
		}
	}
	cycle(0)
	goroutines, before := runtime.NumGoroutine(), heap()
	const cycles = 1000
	for i := 1; i <= cycles; i++ {
		cycle(i)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > goroutines+2 {
			return fmt.Errorf("%d goroutines after %d add/remove cycles, %d before", n, cycles, goroutines)
		}
		return nil
	})
	after := heap()
	t.Logf("%d add/remove cycles: goroutines %d → %d, heap allocated %d → %d KiB", cycles, goroutines, runtime.NumGoroutine(), before>>10, after>>10)
	if st := f.ctrl.Status(); len(st.Slots) != 2 {
		t.Fatalf("status lists %d slots after the churn, want 2", len(st.Slots))
	}
	tb := f.plane.last()
	if tb.Named(fmt.Sprintf("unit-%d", cycles)) != nil || tb.Named("blue") == nil {
		t.Fatal("the last table still names a removed slot, or lost blue")
	}
	if after > before+256<<10 {
		t.Fatalf("heap allocated grew by %d KiB over %d cycles", (after-before)>>10, cycles)
	}
}
