package release_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/release"
	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/shadow"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/wire"
)

// The fixture of these tests is a vipswap without its process: a real
// controller over a bbolt file, vipswap's proxy on two 127.0.0.1
// listeners (prod and stage) beside a data plane that keeps every table,
// a release.Runner, and a launcher (apps) whose instances are HTTP
// servers of this process on their own 127.0.0.1 sockets.

// app is the command the launcher understands: "app" and its flags.
//
//	--nostart  the instance cannot start (the launch fails)
//	--sick     it answers the health probe 503
//	--broken   it answers 500 to everything but the probe
//
// Every instance answers GET /ping?slot=NAME (the probe) 200 when NAME is
// its slot, GET /status/NNN with NNN, and anything else with
// {"slot":...,"version":...}.
var app = []string{"app"}

// instance is one running app.
type instance struct {
	a             *apps
	slot, version string
	command       []string
	addr          string
	srv           *http.Server
	sick          atomic.Bool
	served        sync.WaitGroup
}

func (i *instance) has(flag string) bool { return slices.Contains(i.command[1:], flag) }

func (i *instance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ping" {
		switch {
		case r.URL.Query().Get("slot") != i.slot:
			w.WriteHeader(http.StatusNotFound)
		case i.sick.Load() || i.has("--sick"):
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return
	}
	if hook := i.a.hook(r.URL.Path); hook != nil {
		hook(i)
	}
	if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		n, err := strconv.Atoi(code)
		if err != nil {
			n = http.StatusBadRequest
		}
		w.WriteHeader(n)
		return
	}
	if i.has("--broken") {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"slot":%q,"version":%q}`, i.slot, i.version)
}

// listen starts i on addr ("127.0.0.1:0" for a new port).
func (i *instance) listen(addr string) error {
	if len(i.command) == 0 || i.command[0] != "app" {
		return fmt.Errorf("exec: %q: executable file not found", strings.Join(i.command, " "))
	}
	if i.has("--nostart") {
		return fmt.Errorf("%s exited at once (status 1): cannot start", strings.Join(i.command, " "))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	i.addr = ln.Addr().String()
	i.srv = &http.Server{Handler: i, ReadHeaderTimeout: 5 * time.Second}
	i.served.Go(func() { i.srv.Serve(ln) })
	return nil
}

// stop stops i as SIGTERM would: what is in flight finishes.
func (i *instance) stop(ctx context.Context) {
	if i.srv == nil {
		return
	}
	if i.srv.Shutdown(ctx) != nil {
		i.srv.Close()
	}
	i.served.Wait()
	i.srv = nil
}

// apps is a control.Launcher whose instances are apps of this process.
type apps struct {
	mu       sync.Mutex
	groups   map[string][]*instance // by slot
	hooks    map[string]func(*instance)
	refuse   map[string]bool // addresses the next Replace cannot start again
	stopping sync.WaitGroup
}

func newApps(t *testing.T) *apps {
	a := &apps{groups: map[string][]*instance{}, hooks: map[string]func(*instance){}, refuse: map[string]bool{}}
	t.Cleanup(a.close)
	return a
}

// on makes every instance run fn when it gets a request to path, before
// it answers.
func (a *apps) on(path string, fn func(*instance)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hooks[path] = fn
}

func (a *apps) hook(path string) func(*instance) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hooks[path]
}

// refuseReplace makes the next Replace of the instance at addr fail to
// start (a port another process took meanwhile, say).
func (a *apps) refuseReplace(addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refuse[addr] = true
}

// sicken makes slot's running instances fail the probe from now on.
func (a *apps) sicken(slot string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, i := range a.groups[slot] {
		i.sick.Store(true)
	}
}

// versions returns what slot's instances run, by address.
func (a *apps) versions(slot string) map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	for _, i := range a.groups[slot] {
		if i.srv != nil {
			out[i.addr] = i.version
		}
	}
	return out
}

// start starts run.Replicas instances of slot.
func (a *apps) start(slot string, run state.RunSpec, version string) ([]*instance, error) {
	host, _, _ := strings.Cut(run.Address, ":")
	var group []*instance
	for range run.Replicas {
		i := &instance{a: a, slot: slot, version: version, command: slices.Clone(run.Command)}
		if err := i.listen(host + ":0"); err != nil {
			a.stopAll(group)
			return nil, err
		}
		group = append(group, i)
	}
	return group, nil
}

// stopAll stops group in the background; close waits for it.
func (a *apps) stopAll(group []*instance) {
	for _, i := range group {
		a.stopping.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			i.stop(ctx)
		})
	}
}

// Launch implements control.Launcher.
func (a *apps) Launch(slot string, run state.RunSpec, version string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.groups[slot] != nil {
		return nil
	}
	g, err := a.start(slot, run, version)
	if err != nil {
		return err
	}
	a.groups[slot] = g
	return nil
}

// Relaunch implements control.Launcher.
func (a *apps) Relaunch(slot string, run state.RunSpec, version string) (func(keep bool), error) {
	g, err := a.start(slot, run, version)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	old := a.groups[slot]
	a.groups[slot] = g
	a.mu.Unlock()
	return func(keep bool) {
		a.mu.Lock()
		defer a.mu.Unlock()
		stop := old
		if !keep && slices.Equal(a.groups[slot], g) {
			a.groups[slot], stop = old, g
		}
		a.stopAll(stop)
	}, nil
}

// Replace implements control.Launcher: the old instance stops, the new
// one listens on its address.
func (a *apps) Replace(ctx context.Context, slot, addr string, command []string, version string) error {
	a.mu.Lock()
	var old *instance
	for _, i := range a.groups[slot] {
		if i.addr == addr {
			old = i
		}
	}
	refused := a.refuse[addr]
	delete(a.refuse, addr)
	a.mu.Unlock()
	if old == nil {
		return fmt.Errorf("launch slot %s: no instance %s", slot, addr)
	}
	old.stop(ctx)
	next := &instance{a: a, slot: slot, version: version, command: slices.Clone(command)}
	if refused {
		next.command = append(next.command, "--nostart")
	}
	err := next.listen(addr)
	if err != nil {
		next.addr = addr // what a dead process leaves: an address nothing answers on
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, i := range a.groups[slot] {
		if i == old {
			a.groups[slot][n] = next
		}
	}
	return err
}

// Addrs implements control.Launcher.
func (a *apps) Addrs(slot string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, i := range a.groups[slot] {
		out = append(out, i.addr)
	}
	return out
}

// keep stops the instances of the slots not in names (control's OnSlots).
func (a *apps) keep(names []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for slot, g := range a.groups {
		if !slices.Contains(names, slot) {
			delete(a.groups, slot)
			a.stopAll(g)
		}
	}
}

func (a *apps) close() {
	a.mu.Lock()
	for slot, g := range a.groups {
		delete(a.groups, slot)
		a.stopAll(g)
	}
	a.mu.Unlock()
	a.stopping.Wait()
}

// recorder is a data plane that keeps every table it was given.
type recorder struct {
	mu     sync.Mutex
	tables []*route.Table
}

func (r *recorder) Apply(t *route.Table) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tables = append(r.tables, t)
	return nil
}

func (r *recorder) history() []*route.Table {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.tables)
}

// probeTimeout is the fixture's health probe timeout: long enough that
// a busy machine's healthy instance is not marked down (two slow probes
// in a row would), short enough that a short --timeout is allowed (a
// deploy wants at least the controller's HealthWait, (rise+1) intervals
// and a probe timeout).
const probeTimeout = time.Second

// short is the --timeout of a case that fails by waiting it out, on a
// step that can never succeed; long that of one whose steps must succeed
// (and the patience of one that waits out a later step).
const (
	short = "1500ms"
	long  = "30s"
)

// managed is how blue and green run: two instances of the app.
var managed = state.RunSpec{Command: app, Address: "127.0.0.1:{port}", Replicas: 2, StopTimeout: time.Second}

type fixture struct {
	t        *testing.T
	apps     *apps
	plane    *recorder
	px       *proxy.Proxy
	mirror   *shadow.Mirror // the proxy's, for shadow gates
	ctrl     *control.Controller
	runner   *release.Runner
	store    *bolt.Store
	path     string
	prod     string // the prod listener's URL
	closed   sync.Once
	closeErr error
	moved    atomic.Pointer[view] // what prod is after an operator moved it meanwhile
}

// newFixture starts vipswap's parts over slots blue (active) and green,
// each two managed instances running version 1.0, and waits until all
// four are healthy and routed.
func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, apps: newApps(t), plane: &recorder{}, px: proxy.New(proxy.Options{})}
	f.mirror = shadow.New(shadow.Options{MaxConns: 4, Sender: f.px, BusyWait: -1}) // a busy test machine drops no copy
	f.px.SetMirror(f.mirror)
	for _, slot := range []string{"blue", "green"} {
		if err := f.apps.Launch(slot, managed, "1.0"); err != nil {
			t.Fatal(err)
		}
	}
	var lns [2]net.Listener
	for n := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[n] = ln
	}
	served := make(chan error, 2)
	go func() { served <- f.px.Serve(route.Prod, lns[0]) }()
	go func() { served <- f.px.Serve(route.Stage, lns[1]) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.px.Shutdown(ctx)
		for range 2 {
			if err := <-served; err != nil {
				t.Errorf("proxy: %v", err)
			}
		}
	})
	f.prod = "http://" + lns[0].Addr().String()
	f.path = filepath.Join(t.TempDir(), "state.db")
	var err error
	if f.store, err = bolt.Open(f.path); err != nil {
		t.Fatal(err)
	}
	run := managed
	f.ctrl, err = control.New(context.Background(), control.Config{
		Slots: []control.Slot{
			{Name: "blue", Addrs: f.apps.Addrs("blue"), Version: "1.0", Run: &run},
			{Name: "green", Addrs: f.apps.Addrs("green"), Version: "1.0", Run: &run},
		},
		Active:    "blue",
		Store:     f.store,
		Health:    health.Config{Path: "/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 2},
		Planes:    []control.DataPlane{f.plane, f.px},
		Listeners: [2]string{lns[0].Addr().String(), lns[1].Addr().String()},
		Counts:    f.px.Counters,
		Failed:    f.px.Failed,
		Plans: map[string]rollout.Plan{
			// A step waits for a promote nobody gives.
			"paused": {Steps: []int{500, 1000}, Interval: 10 * time.Millisecond, Pause: true},
			// A shadow gate that a version answering otherwise breaks.
			"shadowed": {Steps: []int{500, 1000}, Interval: 10 * time.Millisecond,
				Shadow: &wire.ShadowGate{Duration: "20s", MinRequests: 20, MaxDifferRate: 0.001, IgnoreFields: []string{"slot"}}},
		},
		Launcher: f.apps,
		Shadow:   f.mirror,
		OnSlots:  f.apps.keep,
		AllowRun: true,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.store.Close()
		t.Fatal(err)
	}
	f.runner = release.New(release.Config{Controller: f.ctrl, AllowRun: func() bool { return true },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Poll: 5 * time.Millisecond})
	t.Cleanup(func() {
		if err := f.close(); err != nil {
			t.Error(err)
		}
	})
	f.waitRoutable("blue", 2)
	f.waitRoutable("green", 2)
	vstest.WaitFor(t, 10*time.Second, func() error {
		h := f.plane.history()
		if n := len(h[len(h)-1].Slot(route.Prod).Instances()); n != 2 {
			return fmt.Errorf("the table routes prod to %d instances, want blue's 2", n)
		}
		return nil
	})
	return f
}

// close stops the runner, then the controller, then closes the store:
// what a stopping vipswap does.
func (f *fixture) close() error {
	f.closed.Do(func() {
		f.runner.Close()
		f.ctrl.Close()
		f.mirror.Close()
		f.closeErr = f.store.Close()
	})
	return f.closeErr
}

// slot returns slot name's status.
func (f *fixture) slot(name string) (wire.SlotStatus, bool) {
	for _, s := range f.ctrl.Status().Slots {
		if s.Name == name {
			return s, true
		}
	}
	return wire.SlotStatus{}, false
}

// waitRoutable waits until slot has n routable instances.
func (f *fixture) waitRoutable(slot string, n int) {
	f.t.Helper()
	vstest.WaitFor(f.t, 10*time.Second, func() error {
		if s, _ := f.slot(slot); s.Routable != n {
			return fmt.Errorf("slot %s has %d routable instances, want %d", slot, s.Routable, n)
		}
		return nil
	})
}

// waitUntil polls cond every few milliseconds until it holds or d passes:
// for the apps' hooks, which run outside the test's goroutine and cannot
// fail it.
func waitUntil(d time.Duration, cond func() bool) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return fmt.Errorf("not within %s", d)
		}
	}
	return nil
}

// sickenAndWait makes slot's instances fail the probe and waits until
// the controller has taken every one out of rotation.
func (f *fixture) sickenAndWait(slot string) {
	f.apps.sicken(slot)
	if err := waitUntil(time.Minute, func() bool { s, _ := f.slot(slot); return s.Routable == 0 }); err != nil {
		f.t.Errorf("slot %s still routable after its instances failed the probe: %v", slot, err)
	}
}

// wait waits until release id has ended and returns its progress.
func (f *fixture) wait(id string) wire.Progress {
	f.t.Helper()
	var p wire.Progress
	vstest.WaitFor(f.t, time.Minute, func() error {
		var ok bool
		if p, ok = f.runner.Get(id); !ok {
			return fmt.Errorf("no release %s", id)
		}
		if p.State == "running" {
			return fmt.Errorf("release %s still runs (%d steps)", id, len(p.Steps))
		}
		return nil
	})
	return p
}

// view is what a failed release must leave as it was: what prod serves
// and what the stored state says.
type view struct {
	Active, Standby string
	Slots           []string           // the slots that exist, in order
	Weights         map[string]float64 // the prod listener's split
	ProdInstances   []string           // the active slot's, with drained marks
	Runs            map[string]string  // each managed slot's run block and version
	Stored          string             // the stored state's active, standby, weights, drained
	Table           string             // the table in force, as it routes prod
}

// prodRouting describes how a table routes prod: its weights and routes,
// and the members of the slots it weighs (not their health). Not
// tb.Slot: that is a weighted draw, which would take a turn of the
// proxy's own (it holds the same table).
func prodRouting(tb *route.Table) string {
	weighed := map[string]bool{}
	for _, w := range tb.Weights(route.Prod) {
		weighed[w.Slot] = w.Weight > 0
	}
	var members []string
	for slot, i := range tb.Members {
		if weighed[slot] {
			members = append(members, slot+"="+i.Addr)
		}
	}
	slices.Sort(members)
	return fmt.Sprint("prod weights ", tb.Weights(route.Prod), " members ", members, " routes ", tb.Routes())
}

func (f *fixture) view() view {
	f.t.Helper()
	v, err := f.look()
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

// look returns f's view; it does not fail the test (apps' hooks call it).
func (f *fixture) look() (view, error) {
	st := f.ctrl.Status()
	v := view{Active: st.Active, Standby: st.Standby, Runs: map[string]string{}}
	for _, l := range st.Listeners {
		if l.Name == "prod" {
			v.Weights = l.Weights
		}
	}
	for _, s := range st.Slots {
		v.Slots = append(v.Slots, s.Name)
		if m, err := f.ctrl.SlotRun(s.Name); err == nil {
			v.Runs[s.Name] = fmt.Sprintf("%+v %s", m.Run, m.Version)
		}
		if s.Name == st.Active {
			for _, i := range s.Instances {
				v.ProdInstances = append(v.ProdInstances, fmt.Sprintf("%s drained=%v", i.Addr, i.Drained))
			}
		}
	}
	stored, rev, err := f.store.Load(context.Background())
	if err != nil {
		return v, err
	}
	if uint64(rev) != st.Revision {
		return v, fmt.Errorf("the store is at revision %d, status at %d", rev, st.Revision)
	}
	v.Stored = fmt.Sprintf("active %s standby %s weights %v drained %v rollout %v", stored.Active, stored.Standby, stored.Weights, stored.Drained, stored.Rollout != nil)
	h := f.plane.history()
	tb := h[len(h)-1]
	v.Table = fmt.Sprint(prodRouting(tb), " stage ", tb.Weights(route.Stage))
	return v, nil
}

// same fails the test where after differs from before.
func same(t *testing.T, before, after view) {
	t.Helper()
	b, a := reflect.ValueOf(before), reflect.ValueOf(after)
	for n := range b.NumField() {
		if !reflect.DeepEqual(b.Field(n).Interface(), a.Field(n).Interface()) {
			t.Errorf("%s changed:\n  before %v\n  after  %v", b.Type().Field(n).Name, b.Field(n).Interface(), a.Field(n).Interface())
		}
	}
}

// load is one client sending GET / to prod every few milliseconds
// until stopped, counting every answer by slot and version and every
// failure.
type load struct {
	stop    chan struct{}
	done    chan struct{}
	ok      int
	by      map[string]int
	failed  int
	errs    []string
	started chan struct{}
}

// startLoad starts a load on f's prod listener; it has had one answer
// when it returns.
func (f *fixture) startLoad() *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{}), by: map[string]int{}, started: make(chan struct{})}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	go func() {
		defer close(l.done)
		defer hc.CloseIdleConnections()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for n := 0; n < 20000; n++ { // a bound, whatever happens
			l.once(hc, f.prod)
			if n == 0 {
				close(l.started)
			}
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
		}
	}()
	<-l.started
	return l
}

func (l *load) once(hc *http.Client, url string) {
	resp, err := hc.Get(url + "/")
	if err != nil {
		l.fail(err.Error())
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	var answer struct{ Slot, Version string }
	if err == nil && resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(body, &answer)
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		l.fail(fmt.Sprintf("status %d, body %q, error %v", resp.StatusCode, body, err))
		return
	}
	l.ok++
	l.by[answer.Slot+" "+answer.Version]++
}

func (l *load) fail(msg string) {
	l.failed++
	if len(l.errs) < 5 {
		l.errs = append(l.errs, msg)
	}
}

// end stops the load and returns what it counted.
func (l *load) end() *load {
	close(l.stop)
	<-l.done
	return l
}

// checkEntry checks the history entry of failed release p, and that it
// survives vipswap state export and import: f is closed (the state file
// is then free), exported, the dump checked, written as JSON, read back
// as the import reads it and imported into a new file, which must hold
// the same entry and state.
func checkEntry(t *testing.T, f *fixture, p wire.Progress, kind string) {
	t.Helper()
	if p.HistoryID == 0 {
		t.Fatalf("the failed %s has no history entry: %+v", kind, p)
	}
	e, err := f.store.Entry(context.Background(), p.HistoryID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Operation != kind || e.Result != store.Failed || !strings.HasPrefix(e.Error, p.FailedStep+": ") || len(e.Steps) == 0 {
		t.Fatalf("history entry %+v; want a failed %s naming step %q", e, kind, p.FailedStep)
	}
	// The failed step is recorded as failed; a restore after it may
	// follow (rolling).
	if i := slices.IndexFunc(e.Steps, func(s store.Step) bool { return s.Name == p.FailedStep }); i < 0 || e.Steps[i].Result != "failed" {
		t.Fatalf("history entry's steps %+v; want %q failed", e.Steps, p.FailedStep)
	}
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	d, err := bolt.Export(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatalf("the export of a state with a failed %s does not check: %v", kind, err)
	}
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back store.Dump
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields() // as vipswap state import reads it
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("the export does not read back: %v", err)
	}
	to := filepath.Join(t.TempDir(), "imported.db")
	if err := bolt.Import(to, back); err != nil {
		t.Fatalf("import of a state with a failed %s: %v", kind, err)
	}
	s, err := bolt.Open(to)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Entry(context.Background(), p.HistoryID)
	if err != nil {
		t.Fatalf("the imported history lacks the failed %s: %v", kind, err)
	}
	want := d.History[slices.IndexFunc(d.History, func(e store.Entry) bool { return e.ID == p.HistoryID })]
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("imported entry differs:\n  got  %+v\n  want %+v", got, want)
	}
	stored, rev, err := s.Load(context.Background())
	if err != nil || rev != d.Revision || !reflect.DeepEqual(stored, *d.State) {
		t.Fatalf("imported state %+v@%d, %v; want %+v@%d", stored, rev, err, *d.State, d.Revision)
	}
}

// oneLine fails the test if msg is not one line.
func oneLine(t *testing.T, what, msg string) {
	t.Helper()
	if msg == "" || strings.ContainsAny(msg, "\r\n") {
		t.Errorf("%s %q: want one line", what, msg)
	}
}
