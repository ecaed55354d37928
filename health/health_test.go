package health

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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

func newChecker(t *testing.T, rise, fall int) (*Checker, chan transition) {
	ch := make(chan transition, 10)
	c := New(Config{Path: "/api/ping?slot={slot}", Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: rise, Fall: fall},
		func(t Target, h bool) { ch <- transition{t, h} })
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
	case <-time.After(5 * time.Second):
		t.Fatalf("no transition to healthy=%v within 5s", want)
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
		c.record(tg, st, s.pass)
		if st.healthy != s.wantHealthy {
			t.Fatalf("step %d (pass=%v): healthy=%v, want %v", i, s.pass, st.healthy, s.wantHealthy)
		}
	}
	if len(ch) != 2 {
		t.Fatalf("got %d transitions, want 2", len(ch))
	}
}

func TestFirstPassMakesHealthy(t *testing.T) {
	c, _ := newChecker(t, 3, 2)
	st := &target{}
	c.record(Target{}, st, false) // still booting
	c.record(Target{}, st, false)
	c.record(Target{}, st, true)
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
	c.MarkDown(tg)
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
	if c.Healthy(tg) || len(ch) != 0 {
		t.Fatal("healthy while answering 404")
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
