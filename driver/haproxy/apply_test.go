package haproxy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/internal/haproxytest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// split routes prod to prod and stage to stage, blue's instances at
// blueAddr and green's at greenAddr, all routable.
func split(rev uint64, prod, stage string, blueAddr, greenAddr []string) *route.Table {
	routable := map[string][]*route.Instance{}
	for _, a := range blueAddr {
		routable["blue"] = append(routable["blue"], route.NewInstance("blue", a))
	}
	for _, a := range greenAddr {
		routable["green"] = append(routable["green"], route.NewInstance("green", a))
	}
	return route.Build(route.Spec{
		Revision:  rev,
		Listeners: [2][]route.Weighted{{{Slot: prod, Weight: 1000}}, {{Slot: stage, Weight: 1000}}},
		Routable:  routable,
	})
}

// TestMapsPreparedBeforeAnyCommit: a map HAProxy does not know fails the
// apply before any map is committed (the prod map was committed before,
// the stage map then failed: half a swap), and Ready names it, so the
// controller refuses the change up front.
func TestMapsPreparedBeforeAnyCommit(t *testing.T) {
	f := startFake(t, func(cmd string) string {
		if cmd == "show map /stage.map" {
			return "Unknown map identifier. Please use #<id> or <file>.\n\n"
		}
		return sane(cmd)
	})
	d := newDriver(f)
	defer d.Close()
	err := d.Apply(split(3, "green", "blue", []string{"127.0.0.1:9001"}, []string{"127.0.0.1:9002"}))
	if err == nil || !strings.Contains(err.Error(), "Unknown map identifier") {
		t.Fatalf("Apply: %v; want the stage map's error", err)
	}
	for _, c := range f.commands() {
		if strings.HasPrefix(c, "commit map") || strings.HasPrefix(c, "prepare map") {
			t.Fatalf("a map was changed although the stage map is unknown: %q", f.commands())
		}
	}
	err = d.Ready(context.Background(), []string{"blue", "green"})
	if err == nil || !strings.Contains(err.Error(), "no map /stage.map (haproxy.maps.stage") {
		t.Fatalf("Ready: %v; want it to name the stage map", err)
	}
}

// TestReadyNamesWhatIsMissing: Ready checks each slot's backend and that
// no two slots share one, not only that the runtime API answers.
func TestReadyNamesWhatIsMissing(t *testing.T) {
	f := startFake(t, sane)
	d := newDriver(f)
	defer d.Close()
	if err := d.Ready(context.Background(), []string{"blue", "green"}); err != nil {
		t.Fatalf("Ready with everything there: %v", err)
	}
	err := d.Ready(context.Background(), []string{"blue", "green", "purple"})
	if err == nil || !strings.Contains(err.Error(), "no backend be_purple for slot purple") {
		t.Fatalf("Ready: %v; want it to name be_purple", err)
	}
	d2 := New(Options{Runtime: Runtime{Addr: f.path, Timeout: 10 * time.Second}, Maps: [2]string{"/prod.map", "/stage.map"},
		Backends: map[string]string{"green": "be_blue"}, Interval: time.Hour})
	defer d2.Close()
	if err := d2.Ready(context.Background(), []string{"blue", "green"}); err == nil || !strings.Contains(err.Error(), "share backend be_blue") {
		t.Fatalf("Ready with two slots on be_blue: %v", err)
	}
}

// TestApplyDeadline: a runtime API that answers every command slowly (each
// within the per-command timeout) fails the whole apply within its
// deadline instead of holding the change up for as long as it likes.
func TestApplyDeadline(t *testing.T) {
	f := startFake(t, func(cmd string) string {
		time.Sleep(150 * time.Millisecond) // the slow HAProxy under test, not synchronisation
		return sane(cmd)
	})
	// Each answer comes far within the per-command timeout, even on a busy
	// machine; only the whole apply's deadline can end it.
	d := New(Options{Runtime: Runtime{Addr: f.path, Timeout: 10 * time.Second}, ApplyTimeout: time.Second,
		Maps: [2]string{"/prod.map", "/stage.map"}, Interval: time.Hour})
	defer d.Close()
	start := time.Now()
	err := d.Apply(split(3, "green", "blue", []string{"127.0.0.1:9001"}, []string{"127.0.0.1:9002"}))
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "did not finish within 1s") {
		t.Fatalf("Apply: %v after %s; want it to give up at its deadline", err, took)
	}
	t.Logf("Apply gave up after %s (its deadline: 1s)", took.Round(time.Millisecond))
	if st := d.Status(); st.Applied || !strings.Contains(st.Error, "did not finish") {
		t.Fatalf("status %+v", st)
	}
}

// statFake answers show stat with what stat says, else like sane.
func statFake(t *testing.T, stat func() string) *fake {
	return startFake(t, func(cmd string) string {
		if cmd == "show stat -1 4 -1" {
			return stat()
		}
		return sane(cmd)
	})
}

const statHead = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,addr\n"

// statLine is one server's line: status, check status and 2xx count.
func statLine(backend, addr, status, check string, ok int) string {
	cols := strings.Split(strings.TrimPrefix(strings.TrimSpace(statHead), "# "), ",")
	f := make([]string, len(cols))
	for i, c := range cols {
		switch c {
		case "pxname":
			f[i] = backend
		case "svname":
			f[i] = "s1"
		case "status":
			f[i] = status
		case "check_status":
			f[i] = check
		case "hrsp_2xx":
			f[i] = fmt.Sprint(ok)
		case "addr":
			f[i] = addr
		}
	}
	return strings.Join(f, ",") + "\n"
}

// TestFirstStatsAreABaseline: what HAProxy counted before the driver
// started is not traffic of this run: the first reading sets the
// baseline, later ones count what came since.
func TestFirstStatsAreABaseline(t *testing.T) {
	var mu sync.Mutex
	ok := 100000
	f := statFake(t, func() string {
		mu.Lock()
		defer mu.Unlock()
		return statHead + statLine("be_blue", "127.0.0.1:9001", "UP", "L7OK", ok)
	})
	d := newDriver(f)
	defer d.Close()
	if err := d.Apply(table("blue")); err != nil { // reads the statistics after applying
		t.Fatal(err)
	}
	if got := d.Counts(route.Prod)["blue"].Requests(); got != 0 {
		t.Fatalf("after the first reading blue counts %d requests; want 0 (HAProxy's history is not this run's traffic)", got)
	}
	mu.Lock()
	ok += 25
	mu.Unlock()
	d.readStats(context.Background())
	if got := d.Counts(route.Prod)["blue"].Requests(); got != 25 {
		t.Fatalf("after 25 more requests blue counts %d; want 25", got)
	}
}

// TestNoCheckIsNotHealthy: with HAProxy's health in use, a server HAProxy
// does not check says nothing about the instance: it is not healthy, and
// the check says why.
func TestNoCheckIsNotHealthy(t *testing.T) {
	f := statFake(t, func() string {
		return statHead + statLine("be_blue", "127.0.0.1:9001", "no check", "", 0) + statLine("be_green", "127.0.0.1:9002", "UP", "L7OK", 0)
	})
	d := newDriver(f)
	defer d.Close()
	ck := d.Probe(context.Background(), health.Target{Slot: "blue", Addr: "127.0.0.1:9001"})
	if ck.OK() || !strings.Contains(ck.Detail, "add check") {
		t.Fatalf("a server without checks: %+v; want not healthy, saying it needs check", ck)
	}
	if ck := d.Probe(context.Background(), health.Target{Slot: "green", Addr: "127.0.0.1:9002"}); !ck.OK() {
		t.Fatalf("a server HAProxy says is UP: %+v", ck)
	}
	// Given by host name, before any table was applied: the server at
	// the address the name resolves to.
	if ck := d.Probe(context.Background(), health.Target{Slot: "green", Addr: "localhost:9002"}); !ck.OK() {
		t.Fatalf("localhost:9002, a server HAProxy says is UP at 127.0.0.1:9002: %+v", ck)
	}
}

// servers returns HAProxy's servers as "backend/name addr state weight".
func servers(t *testing.T, rt *Runtime) []string {
	t.Helper()
	all, err := rt.ShowServers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range all {
		out = append(out, fmt.Sprintf("%s/%s %s %s %d", s.Backend, s.Name, s.Addr, serverState(s), s.Weight))
	}
	slices.Sort(out)
	return out
}

func startHAProxy(t *testing.T) (*haproxytest.HAProxy, string, string) {
	t.Helper()
	blue, green := vstest.FreeAddr(t), vstest.FreeAddr(t)
	return haproxytest.Start(t, map[string][]string{"blue": {blue}, "green": {green}}, "blue", "green"), blue, green
}

func driverFor(h *haproxytest.HAProxy, interval time.Duration, log *slog.Logger) *Driver {
	// The timeout only ends a hung command: a busy machine's HAProxy may
	// be slow to answer.
	return New(Options{Runtime: Runtime{Addr: h.Socket, Timeout: 10 * time.Second}, Maps: [2]string{h.ProdMap, h.StageMap}, Interval: interval, Logger: log})
}

// TestHostNameInstance: an instance given by host name (localhost:PORT)
// is the server at the address the name resolves to. It was added as a
// server HAProxy shows with no address, the real one put in maintenance
// (all traffic lost), and every later apply failed on "Already exists".
func TestHostNameInstance(t *testing.T) {
	h, blue, green := startHAProxy(t)
	d := driverFor(h, time.Hour, nil)
	defer d.Close()
	byName := func(a string) string { return "localhost:" + a[strings.LastIndex(a, ":")+1:] }
	for rev, prod := range []string{"green", "blue", "green"} {
		err := d.Apply(split(uint64(rev+2), prod, "blue", []string{byName(blue)}, []string{byName(green)}))
		if err != nil {
			t.Fatalf("apply %d: %v", rev, err)
		}
	}
	want := []string{"be_blue/s1 " + blue + " ready 1", "be_green/s1 " + green + " ready 1"}
	if got := servers(t, &d.opts.Runtime); !slices.Equal(got, want) {
		t.Fatalf("HAProxy's servers: %q; want %q (the configured ones, ready, nothing added)", got, want)
	}
	d.readStats(context.Background())
	if v := d.View("blue", byName(blue)); strings.Contains(v, "not in HAProxy") {
		t.Fatalf("status of the instance given by name: %s", v)
	}
}

// TestOneBadInstanceDoesNotBlockTheRest: an instance HAProxy cannot have
// (its name does not resolve) is reported, the rest of the table is
// applied, and its slot's other servers stay in service.
func TestOneBadInstanceDoesNotBlockTheRest(t *testing.T) {
	h, blue, green := startHAProxy(t)
	d := driverFor(h, time.Hour, nil)
	defer d.Close()
	other := vstest.FreeAddr(t)
	err := d.Apply(split(2, "green", "blue", []string{"vipswap-no-such-host.invalid:9000"}, []string{green, other}))
	if err == nil || !strings.Contains(err.Error(), "vipswap-no-such-host.invalid:9000 of slot blue") {
		t.Fatalf("Apply: %v; want it to name the instance", err)
	}
	m, err := d.opts.Runtime.ShowMap(context.Background(), h.ProdMap)
	if err != nil || describeMap(m) != "0:9999 be_green" {
		t.Fatalf("prod map %v, %v: want the swap applied despite blue's bad instance", m, err)
	}
	got := servers(t, &d.opts.Runtime)
	for _, w := range []string{"be_blue/s1 " + blue + " ready", "be_green/s1 " + green + " ready", " " + other + " ready"} {
		if !strings.Contains(strings.Join(got, "\n"), w) {
			t.Fatalf("HAProxy's servers %q: want %q", got, w)
		}
	}
	if st := d.Status(); st.Applied || !strings.Contains(st.Error, "does not resolve") {
		t.Fatalf("status %+v: want not applied, naming the instance", st)
	}
}

// TestNewDrainedMember: a member that is new to HAProxy and drained is
// added and drained (it was left in maintenance, and the apply failed).
func TestNewDrainedMember(t *testing.T) {
	h, blue, green := startHAProxy(t)
	d := driverFor(h, time.Hour, nil)
	defer d.Close()
	extra := vstest.FreeAddr(t)
	tb := route.Build(route.Spec{
		Revision:  2,
		Listeners: [2][]route.Weighted{{{Slot: "blue", Weight: 1000}}, {{Slot: "green", Weight: 1000}}},
		Routable:  map[string][]*route.Instance{"blue": {route.NewInstance("blue", blue)}, "green": {route.NewInstance("green", green)}},
		Members:   map[string][]*route.Instance{"green": {route.NewInstance("green", green), route.NewInstance("green", extra)}},
	})
	if err := d.Apply(tb); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(servers(t, &d.opts.Runtime), "\n"); !strings.Contains(got, extra+" drain") {
		t.Fatalf("HAProxy's servers:\n%s\nwant %s added and drained", got, extra)
	}
}

// TestHandChangesPutBack: a weight set to 0 by hand (the server takes no
// traffic, though its state is ready) and a state set by hand are seen
// and put back, and the log says what differed.
func TestHandChangesPutBack(t *testing.T) {
	h, blue, green := startHAProxy(t)
	var logs vstest.Buffer
	d := driverFor(h, 50*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	defer d.Close()
	if err := d.Apply(split(2, "blue", "green", []string{blue}, []string{green})); err != nil {
		t.Fatal(err)
	}
	rt := &d.opts.Runtime
	for _, cmd := range []string{"set weight be_blue/s1 0", "set server be_green/s1 state maint"} {
		if err := rt.expect(context.Background(), cmd, ""); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"be_blue/s1 " + blue + " ready 1", "be_green/s1 " + green + " ready 1"}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if got := servers(t, rt); !slices.Equal(got, want) {
			return fmt.Errorf("HAProxy's servers %q; want %q", got, want)
		}
		if st := d.Status(); !st.Applied || st.Reapplied == 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	out := logs.String()
	for _, w := range []string{"has weight 0", "is maint, want ready", "changed by hand"} {
		if !strings.Contains(out, w) {
			t.Fatalf("the log does not say %q:\n%s", w, out)
		}
	}
}

// A server HAProxy counts up is healthy: "UP", "UP 1/3" (up, one check
// failed), "DRAIN" and "DRAIN (agent)". "DRAIN 1/3" is not: it is how a
// server vipswap has just added (drained) shows before HAProxy checked it
// once, and readying it then would send requests to a process that may
// not listen yet. "DOWN 1/2" (down, one check passed) is not either.
func TestWhichServerStatesAreHealthy(t *testing.T) {
	f := statFake(t, func() string {
		return statHead + statLine("be_blue", "127.0.0.1:9001", "UP 1/3", "L7STS", 0) +
			statLine("be_blue", "127.0.0.1:9002", "DRAIN 1/3", "INI", 0) +
			statLine("be_blue", "127.0.0.1:9003", "DRAIN (agent)", "L7OK", 0) +
			statLine("be_blue", "127.0.0.1:9004", "DOWN 1/2", "L7OK", 0) +
			statLine("be_blue", "127.0.0.1:9005", "DRAIN", "L7OK", 0)
	})
	d := newDriver(f)
	defer d.Close()
	for addr, want := range map[string]bool{"127.0.0.1:9001": true, "127.0.0.1:9002": false, "127.0.0.1:9003": true, "127.0.0.1:9004": false, "127.0.0.1:9005": true} {
		if ck := d.Probe(context.Background(), health.Target{Slot: "blue", Addr: addr}); ck.OK() != want {
			t.Errorf("%s: %+v; want healthy %v", addr, ck, want)
		}
	}
}
