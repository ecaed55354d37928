package shadow_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/proxy/proxyproto"
	"github.com/vipswap/vipswap/shadow"
)

// headerEcho answers with the request's header fields as JSON (but the
// shadow's mark and Via, which name the hop), as an application that
// builds links from X-Forwarded-Host or trusts X-Forwarded-Proto would.
func headerEcho(w http.ResponseWriter, r *http.Request) {
	h := map[string]string{}
	for k, vv := range r.Header {
		if k == proxy.ShadowHeader || k == "Via" {
			continue
		}
		h[k] = strings.Join(vv, ", ")
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(h)
}

// TestCopiesCarryTheHeaderProdsInstanceGot: a client's X-Forwarded-Host
// and X-Forwarded-Proto, a field its Connection header names, the pin
// header spelt with underscores: prod's instance never sees them as the
// client sent them, and neither may the copy (what a client sends is a
// claim); and X-Forwarded-For is the same chain on both sides. An
// application that echoes its request header answers a copy as it
// answered the original.
func TestCopiesCarryTheHeaderProdsInstanceGot(t *testing.T) {
	green := httptest.NewServer(http.HandlerFunc(headerEcho))
	t.Cleanup(green.Close)
	r := newRig(t, headerEcho, green.Listener.Addr().String(), shadow.Options{AffinityCookie: "vipswap_slot"})
	r.start(100, []string{"GET"})
	const n = 5
	failed := r.load(t, n, 1, 200, func(i int) *http.Request {
		req := r.get("/api/test")(i)
		req.Header.Set("X-Forwarded-Host", "attacker.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-For", "10.9.8.7")
		req.Header.Set("Connection", "X-Secret")
		req.Header.Set("X-Secret", "hop only")
		req.Header["X_Vipswap_Slot"] = []string{"blue"}
		return req
	})
	if failed != 0 {
		t.Fatalf("%d prod requests failed, want 0", failed)
	}
	f := r.settled(t, n)
	if f.Same != n || f.Differ != 0 {
		t.Errorf("same %d, differ %d, want %d and 0: the copy's header is not prod's (samples %+v)", f.Same, f.Differ, n, f.Samples)
	}
}

// TestLargeProdHeadsCountAgainstMemory: prod's answer head waits in the
// queue with its copy (it is compared once the target answered), so it
// is held against MaxMemory like the request's: with large heads and a
// slow target, copies are dropped for memory rather than held beyond it.
func TestLargeProdHeadsCountAgainstMemory(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // hangs until the load is done: the queue fills
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { unblock(); green.Close() })
	const maxMem = 1 << 20
	big := strings.Repeat("h", 48<<10)
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", big)
		io.WriteString(w, "ok")
	}, green.Listener.Addr().String(),
		// A timeout longer than the load: no copy ends (and gives its
		// memory back) before the count, however slow the machine.
		shadow.Options{MaxMemory: maxMem, MaxConns: 2, QueueSize: 10000, Timeout: time.Minute, StopErrorRate: 2})
	r.start(100, []string{"GET"})
	const n = 40
	if failed := r.load(t, n, 10, 200, r.get("/")); failed != 0 {
		t.Errorf("%d prod requests failed, want 0", failed)
	}
	dropped := r.m.Figures().Dropped
	_, peak := r.m.Held()
	unblock()
	r.settled(t, n)
	// At most maxMem/48KiB copies fit: the others must be dropped.
	if dropped["memory"] < n-maxMem/(48<<10)-1 || peak > maxMem {
		t.Errorf("dropped %v (peak held %d): %d copies with 48 KiB prod heads were held within %d bytes, want most dropped for memory",
			dropped, peak, n-dropped["memory"], maxMem)
	}
	t.Logf("peak held %d bytes of %d; dropped %v", peak, maxMem, dropped)
}

// TestABodyOverTheCompareLimitOnOneSideOnlyDiffers: a body above
// CompareLimit is not compared, but one side above it and the other not
// are bodies of different lengths for certain: a target that answers a
// large page with a few bytes (same status, same type) differs.
func TestABodyOverTheCompareLimitOnOneSideOnlyDiffers(t *testing.T) {
	const limit = 64 << 10
	large := strings.Repeat("x", 2*limit)
	for _, tc := range []struct {
		name         string
		prod, target string
		where        string
	}{
		{"both over", large, large + "y", ""},
		{"prod over", large, "short", "body length"},
		{"target over", "short", large, "body length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := func(body string) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/plain")
					io.WriteString(w, body)
				}
			}
			green := httptest.NewServer(text(tc.target))
			t.Cleanup(green.Close)
			r := newRig(t, text(tc.prod), green.Listener.Addr().String(), shadow.Options{CompareLimit: limit})
			r.start(100, []string{"GET"})
			if failed := r.load(t, 1, 1, 200, r.get("/")); failed != 0 {
				t.Fatal("the prod request failed")
			}
			f := r.settled(t, 1)
			switch {
			case tc.where == "" && (f.Same != 1 || f.BodyUncompared != 1):
				t.Errorf("same %d, body_uncompared %d, want 1 and 1 (samples %+v)", f.Same, f.BodyUncompared, f.Samples)
			case tc.where != "" && (f.Differ != 1 || f.Samples[0].Where != tc.where):
				t.Errorf("differ %d (samples %+v), want a difference at %q", f.Differ, f.Samples, tc.where)
			}
		})
	}
}

// TestCopiesFollowReloadedRoutingHints: a reload may rename the pin header
// and the affinity cookie; copies carry neither under its new name.
func TestCopiesFollowReloadedRoutingHints(t *testing.T) {
	var leaked atomic.Int64
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie("new_slot"); err == nil || r.Header.Get("X-New-Slot") != "" {
			leaked.Add(1)
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(green.Close)
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, green.Listener.Addr().String(),
		shadow.Options{AffinityCookie: "vipswap_slot"})
	r.m.SetHints("new_slot") // a reload changed the cookie and the pin header
	r.p.Reconfigure(proxy.Options{PinHeader: "X-New-Slot"})
	r.start(100, []string{"GET"})
	const n = 5
	failed := r.load(t, n, 1, 200, func(i int) *http.Request {
		req := r.get("/")(i)
		req.Header.Set("X-New-Slot", "blue")
		req.AddCookie(&http.Cookie{Name: "new_slot", Value: "blue~x"})
		return req
	})
	if failed != 0 {
		t.Fatalf("%d prod requests failed", failed)
	}
	f := r.settled(t, n)
	if f.Same != n || leaked.Load() != 0 {
		t.Errorf("same %d of %d; %d copies carried the renamed pin header or affinity cookie, want none", f.Same, n, leaked.Load())
	}
}

// TestAStreamLongerThanTheTimeoutIsNoTargetError: prod's answer is a
// stream (server-sent events) that ran longer than a copy may take; the
// target streams alike and is cut at the timeout: that is no failure of
// the target (no error, no stop of a healthy slot), but a pair compared by
// status and type.
func TestAStreamLongerThanTheTimeoutIsNoTargetError(t *testing.T) {
	stream := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: 2\n\n")
	}
	green := httptest.NewServer(http.HandlerFunc(stream))
	t.Cleanup(green.Close)
	r := newRig(t, stream, green.Listener.Addr().String(), shadow.Options{Timeout: 300 * time.Millisecond})
	r.start(100, []string{"GET"})
	const n = 2
	if failed := r.load(t, n, 2, 200, r.get("/events")); failed != 0 {
		t.Fatalf("%d prod requests failed", failed)
	}
	f := r.settled(t, n)
	if f.Error != 0 || f.TargetErrors != 0 || f.Same != n || f.BodyUncompared != n {
		t.Errorf("error %d, target errors %d, same %d, body_uncompared %d (samples %+v): want %d streams compared by status and type",
			f.Error, f.TargetErrors, f.Same, f.BodyUncompared, f.Samples, n)
	}
}

// TestConditionalAndCompressedAnswersAreNoFalseDifference: two versions
// that serve the same content may still answer differently in form. A
// conditional GET prod's version finds current (304) gets the target's
// full answer, under its own ETag: no difference. The same JSON gzip'd at
// another level is the same; other JSON, gzip'd, differs at its path.
func TestConditionalAndCompressedAnswersAreNoFalseDifference(t *testing.T) {
	gz := func(body string, level int) []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, level)
		io.WriteString(zw, body)
		zw.Close()
		return b.Bytes()
	}
	app := func(etag, body string, level int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", "application/json")
			if r.Header.Get("If-None-Match") == etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz(body, level))
		}
	}
	same := `{"name":"a","items":[1,2,3],"text":"` + strings.Repeat("abc ", 200) + `"}`
	other := strings.Replace(same, `"name":"a"`, `"name":"b"`, 1)
	for _, tc := range []struct {
		name       string
		target     http.HandlerFunc
		inm        string // the client's If-None-Match
		where      string // "" for no difference
		uncompared uint64
	}{
		{"304 at prod, 200 at the target", app(`"v2"`, same, 1), `"v1"`, "", 1},
		{"another gzip level", app(`"v1"`, same, 9), "", "", 0},
		{"another ETag for the same content", app(`"v2"`, same, 1), "", "", 0},
		{"other JSON, gzip'd", app(`"v1"`, other, 1), "", "$.name", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			green := httptest.NewServer(tc.target)
			t.Cleanup(green.Close)
			r := newRig(t, app(`"v1"`, same, 1), green.Listener.Addr().String(), shadow.Options{})
			r.start(100, []string{"GET"})
			want := http.StatusOK
			if tc.inm != "" {
				want = http.StatusNotModified
			}
			const n = 3
			failed := r.load(t, n, 1, want, func(i int) *http.Request {
				req := r.get("/")(i)
				if tc.inm != "" {
					req.Header.Set("If-None-Match", tc.inm)
				}
				req.Header.Set("Accept-Encoding", "gzip") // the client takes gzip as sent
				return req
			})
			if failed != 0 {
				t.Fatalf("%d prod requests failed", failed)
			}
			f := r.settled(t, n)
			switch {
			case tc.where == "" && (f.Same != n || f.Differ != 0):
				t.Errorf("same %d, differ %d (samples %+v), want %d and 0", f.Same, f.Differ, f.Samples, n)
			case tc.where != "" && (f.Differ != n || f.Samples[0].Where != tc.where):
				t.Errorf("differ %d (samples %+v), want %d at %q", f.Differ, f.Samples, n, tc.where)
			}
			if f.BodyUncompared != tc.uncompared*n {
				t.Errorf("body_uncompared %d, want %d", f.BodyUncompared, tc.uncompared*n)
			}
		})
	}
}

// TestCopiesCarryThePROXYHeaderTheirSlotWants: a slot whose instances
// require a PROXY protocol header (send_proxy) gets one with each copy,
// as with prod's requests: an instance that refuses connections without
// one answers every copy.
func TestCopiesCarryThePROXYHeaderTheirSlotWants(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, Mode: proxyproto.Require,
		Trusted: proxyproto.TrustList([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})}
	host := func(w http.ResponseWriter, r *http.Request) {
		h, _, _ := net.SplitHostPort(r.RemoteAddr) // the client's, as the PROXY header names it
		io.WriteString(w, h)
	}
	green := &http.Server{Handler: http.HandlerFunc(host), ReadHeaderTimeout: 10 * time.Second}
	go green.Serve(pl)
	t.Cleanup(func() { green.Close() })
	r := newRig(t, host, ln.Addr().String(), shadow.Options{})
	r.p.Reconfigure(proxy.Options{PinHeader: "X-Vipswap-Slot", SendProxyProtocol: map[string]int{"green": 2}})
	r.start(100, []string{"GET"})
	const n = 4
	if failed := r.load(t, n, 1, 200, r.get("/")); failed != 0 {
		t.Fatalf("%d prod requests failed", failed)
	}
	if f := r.settled(t, n); f.Same != n || f.Error != 0 {
		t.Errorf("same %d, error %d (samples %+v), want %d answered alike", f.Same, f.Error, f.Samples, n)
	}
}

// TestCopiesYieldToABusyCPU: while the process's goroutines wait for a CPU
// (here: more busy goroutines than CPUs, and a wait limit of a
// microsecond), copies are dropped as busy rather than sent; prod loses
// nothing.
func TestCopiesYieldToABusyCPU(t *testing.T) {
	green := httptest.NewServer(jsonApp("x", 0, nil))
	t.Cleanup(green.Close)
	r := newRig(t, jsonApp("x", 0, nil), green.Listener.Addr().String(), shadow.Options{BusyWait: time.Microsecond})
	r.start(100, []string{"GET"})
	stop := make(chan struct{})
	var spin sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		spin.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					runtime.Gosched() // runnable, always: the others wait for a CPU
				}
			}
		})
	}
	var busy uint64
	vstest.WaitFor(t, 30*time.Second, func() error {
		if failed := r.load(t, 20, 4, 200, r.get("/")); failed != 0 {
			t.Fatalf("%d prod requests failed", failed)
		}
		if busy = r.m.Figures().Dropped["busy"]; busy == 0 {
			return errors.New("no copy dropped as busy yet")
		}
		return nil
	})
	close(stop)
	spin.Wait()
	t.Logf("dropped as busy: %d", busy)
}
