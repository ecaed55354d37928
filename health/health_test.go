package health

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

type transition struct {
	t       Target
	healthy bool
}

// scripted is an instance whose probe answers follow a script, signalling
// every probe it receives.
type scripted struct {
	srv    *httptest.Server
	status atomic.Int32
	probes chan string
}

func newScripted(t *testing.T, status int) *scripted {
	s := &scripted{probes: make(chan string, 100)}
	s.status.Store(int32(status))
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(s.status.Load()))
		select {
		case s.probes <- r.URL.RequestURI():
		default:
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// probeTimeout is the probes' timeout in these tests: it only ends a probe
// that hangs, for with fall 1 one slow answer on a busy machine would
// mark a healthy instance down.
const probeTimeout = 10 * time.Second

func newChecker(t *testing.T, rise, fall int) (*Checker, chan transition) {
	ch := make(chan transition, 10)
	c := New(Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: probeTimeout, Rise: rise, Fall: fall},
		func(t Target, h bool, _ Check) { ch <- transition{t, h} })
	t.Cleanup(c.Close)
	return c, ch
}

func await(t *testing.T, ch chan transition, want bool) {
	t.Helper()
	select {
	case tr := <-ch:
		if tr.healthy != want {
			t.Fatalf("got healthy=%v, want %v", tr.healthy, want)
		}
	case <-time.After(time.Minute): // only ends a hung test
		t.Fatalf("no transition to healthy=%v", want)
	}
}

func TestProbeNamesTheSlot(t *testing.T) {
	inst := newScripted(t, 200)
	c, ch := newChecker(t, 2, 2)
	c.Add(Target{Slot: "slot0", Addr: strings.TrimPrefix(inst.srv.URL, "http://")})
	await(t, ch, true)
	if got := <-inst.probes; got != "/api/ping?slot=slot0" {
		t.Fatalf("probe asked %q, want /api/ping?slot=slot0", got)
	}
}

// result is a check that passed or failed.
func result(pass bool) Check {
	if pass {
		return Check{Code: L7OK, Status: 200}
	}
	return Check{Code: L7STS, Status: 503}
}

func TestRiseAndFall(t *testing.T) {
	c, ch := newChecker(t, 2, 3)
	tg := Target{Slot: "blue", Addr: "127.0.0.1:1"}
	st := &target{seen: true}
	steps := []struct {
		pass        bool
		wantHealthy bool
	}{
		{false, false},
		{true, false}, // rise 2: one pass is not enough
		{false, false},
		{true, false}, // a failure reset the count
		{true, true},
		{false, true}, // fall 3
		{false, true},
		{true, true}, // a pass resets the failure count
		{false, true},
		{false, true},
		{false, false},
	}
	for i, s := range steps {
		c.record(tg, st, result(s.pass), time.Now())
		if st.healthy != s.wantHealthy {
			t.Fatalf("step %d (pass=%v): healthy=%v, want %v", i, s.pass, st.healthy, s.wantHealthy)
		}
	}
	// The first check failed: one "down from the start", then two
	// transitions.
	if len(ch) != 3 {
		t.Fatalf("got %d transitions, want 3", len(ch))
	}
}

func TestFirstPassMakesHealthy(t *testing.T) {
	c, _ := newChecker(t, 3, 2)
	st := &target{}
	c.record(Target{}, st, result(false), time.Now()) // still booting
	c.record(Target{}, st, result(false), time.Now())
	c.record(Target{}, st, result(true), time.Now())
	if !st.healthy {
		t.Fatal("a fresh target is not healthy after its first pass")
	}
}

func TestMarkDownThenBack(t *testing.T) {
	inst := newScripted(t, 200)
	c, ch := newChecker(t, 2, 2)
	tg := Target{Slot: "blue", Addr: strings.TrimPrefix(inst.srv.URL, "http://")}
	c.Add(tg)
	await(t, ch, true)
	c.MarkDown(tg, "refused a connection")
	await(t, ch, false)
	if c.Healthy(tg) {
		t.Fatal("healthy right after MarkDown")
	}
	await(t, ch, true)
}

func TestWrongSlotIsUnhealthy(t *testing.T) {
	inst := newScripted(t, 404) // the slot-aware contract: 404 for another slot
	c, ch := newChecker(t, 1, 1)
	tg := Target{Slot: "blue", Addr: strings.TrimPrefix(inst.srv.URL, "http://")}
	c.Add(tg)
	for range 3 {
		<-inst.probes
	}
	if c.Healthy(tg) || len(ch) != 1 || (<-ch).healthy {
		t.Fatal("healthy while answering 404, or not said once why it is down")
	}
}

func TestRefusedConnectionFails(t *testing.T) {
	inst := newScripted(t, 200)
	c, ch := newChecker(t, 1, 1)
	tg := Target{Slot: "blue", Addr: strings.TrimPrefix(inst.srv.URL, "http://")}
	c.Add(tg)
	await(t, ch, true)
	inst.srv.Close()
	await(t, ch, false)
}

// TestCheckSaysWhy (issue 16, point 1; issue 9, point 2): each way a probe
// ends has its code, kept as the target's last check.
func TestCheckSaysWhy(t *testing.T) {
	listen := func(t *testing.T) net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	refused := func(t *testing.T) string {
		ln := listen(t)
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	cases := []struct {
		name, addr, want string
	}{
		{"a 404", strings.TrimPrefix(newScripted(t, 404).srv.URL, "http://"), "L7STS 404"},
		{"a 200", strings.TrimPrefix(newScripted(t, 200).srv.URL, "http://"), "L7OK 200"},
		{"refused", refused(t), "L4CON connection refused"},
		{"no answer", vstest.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) }), "L7TOUT no answer within 200ms"},
		{"garbage", vstest.Serve(t, func(c net.Conn) { io.WriteString(c, "SSH-2.0-OpenSSH\r\n") }), `L7RSP malformed status line "SSH-2.0-OpenSSH"`},
		{"closed", vstest.Serve(t, func(c net.Conn) {}), "L7RSP closed without answering"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := New(Config{Path: "/ping", Interval: time.Hour, Timeout: 200 * time.Millisecond, Rise: 1, Fall: 1}, func(Target, bool, Check) {})
			t.Cleanup(c.Close)
			tg := Target{Slot: "blue", Addr: tc.addr}
			c.Add(tg)
			var got State
			deadline := time.Now().Add(time.Minute) // only ends a hung test
			for got = c.State(tg); got.Last.Code == "" && time.Now().Before(deadline); got = c.State(tg) {
				runtime.Gosched()
			}
			if got.Last.String() != tc.want {
				t.Fatalf("last check %q, want %q", got.Last, tc.want)
			}
			counts, _ := c.Counts()
			if counts[got.Last.Code] != 1 {
				t.Fatalf("counts %v, want one %s", counts, got.Last.Code)
			}
		})
	}
}

// TestCouldNotProbeChangesNothing (issue 9, point 2): when vipswap itself
// is out of descriptors, a healthy instance stays healthy.
func TestCouldNotProbeChangesNothing(t *testing.T) {
	inst := newScripted(t, 200)
	var log vstest.Buffer
	ch := make(chan transition, 10)
	c := New(Config{Path: "/", Interval: 10 * time.Millisecond, Timeout: probeTimeout, Rise: 1, Fall: 1, Logger: slog.New(slog.NewTextHandler(&log, nil))},
		func(t Target, h bool, _ Check) { ch <- transition{t, h} })
	t.Cleanup(c.Close)
	var starved atomic.Bool
	dial := c.dial
	c.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if starved.Load() {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
		}
		return dial(ctx, network, addr)
	}
	tg := Target{Slot: "blue", Addr: strings.TrimPrefix(inst.srv.URL, "http://")}
	c.Add(tg)
	await(t, ch, true)
	starved.Store(true)
	vstest.WaitFor(t, 5*time.Second, func() error {
		if counts, _ := c.Counts(); counts[SOCKERR] < 5 {
			return fmt.Errorf("%d probes could not be made so far", counts[SOCKERR])
		}
		return nil
	})
	if st := c.State(tg); !st.Healthy || st.Last.Code != SOCKERR || len(ch) != 0 {
		t.Fatalf("state %+v after %d transitions, want healthy with last check SOCKERR", st, len(ch))
	}
	if !strings.Contains(log.String(), "could not probe") {
		t.Fatalf("nothing logged: %s", log.String())
	}
}

// A probe in flight when the instance is marked down (its process
// replaced) was answered by the old process: its pass must not make the
// instance healthy again, nor date its health from before the mark. A
// rolling update otherwise takes the old process's answer for the new
// one's, or (its restore) waits for a fresh pass that never comes while
// the instance shows healthy since before the restart.
func TestProbeInFlightAcrossMarkDownDoesNotCount(t *testing.T) {
	var hold atomic.Bool
	entered, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold.CompareAndSwap(true, false) { // this one probe waits
			entered <- struct{}{}
			<-release
		}
	}))
	t.Cleanup(srv.Close)
	type change struct {
		healthy bool
		began   time.Time
	}
	ch := make(chan change, 10)
	c := New(Config{Path: "/", Interval: 20 * time.Millisecond, Timeout: 10 * time.Second, Rise: 1, Fall: 1},
		func(_ Target, h bool, ck Check) { ch <- change{h, ck.Time} })
	t.Cleanup(c.Close)
	tg := Target{Slot: "blue", Addr: strings.TrimPrefix(srv.URL, "http://")}
	c.Add(tg)
	if got := <-ch; !got.healthy {
		t.Fatal("first transition is not to healthy")
	}
	hold.Store(true)
	<-entered // a probe is in flight
	marked := time.Now()
	c.MarkDown(tg, "replaced: a new process starts")
	if got := <-ch; got.healthy {
		t.Fatal("MarkDown did not mark it down")
	}
	close(release) // the old process answers the probe in flight
	got := <-ch
	if !got.healthy || got.began.Before(marked) {
		t.Fatalf("back to healthy=%v on a probe that began %s before the mark-down; want a probe begun after it", got.healthy, marked.Sub(got.began))
	}
	if s := c.State(tg); s.Since.Before(marked) {
		t.Fatalf("healthy since %s, before the mark-down at %s", s.Since, marked)
	}
}
