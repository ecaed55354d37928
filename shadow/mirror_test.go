package shadow_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/shadow"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// rig is a proxy whose prod sends blue's traffic, with a mirror towards
// green.
type rig struct {
	p      *proxy.Proxy
	m      *shadow.Mirror
	prod   string
	blue   *httptest.Server
	green  string // green's instance address
	stops  chan string
	client *http.Client
}

// newRig starts blue (answering with blueH), a proxy with prod on blue,
// and a mirror to green at greenAddr with o.
func newRig(t testing.TB, blueH http.HandlerFunc, greenAddr string, o shadow.Options) *rig {
	t.Helper()
	r := &rig{stops: make(chan string, 4), green: greenAddr}
	r.blue = httptest.NewServer(blueH)
	t.Cleanup(r.blue.Close)
	o.OnStop = func(_ time.Time, why string) { r.stops <- why }
	if o.BusyWait == 0 {
		o.BusyWait = -1 // a busy test machine drops no copy: the tests count them
	}
	r.p = proxy.New(proxy.Options{PinHeader: "X-Vipswap-Slot"})
	o.Sender = r.p
	r.m = shadow.New(o)
	t.Cleanup(r.m.Close)
	var spec route.Spec
	spec.Listeners[route.Prod] = []route.Weighted{{Slot: "blue", Weight: 1000}}
	spec.Listeners[route.Stage] = []route.Weighted{{Slot: "green", Weight: 1000}}
	spec.Routable = map[string][]*route.Instance{
		"blue":  {route.NewInstance("blue", r.blue.Listener.Addr().String())},
		"green": {},
	}
	for _, a := range strings.Split(greenAddr, ",") { // several: comma-separated
		spec.Routable["green"] = append(spec.Routable["green"], route.NewInstance("green", a))
	}
	r.p.Apply(route.Build(spec))
	r.p.SetMirror(r.m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.prod = "http://" + ln.Addr().String()
	go r.p.Serve(route.Prod, ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r.p.Shutdown(ctx)
	})
	r.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(r.client.CloseIdleConnections)
	return r
}

// A copy whose instance refuses the connection (nothing sent: an
// instance stopping during a deploy) goes to another instance of the
// slot, once, and compares there: no target error for what the new
// version did not do.
func TestACopyRefusedByOneInstanceGoesToAnother(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := ln.Addr().String()
	ln.Close() // nothing listens there: connections are refused
	var served atomic.Int64
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		jsonApp("x", 0, nil)(w, r)
	}))
	t.Cleanup(green.Close)
	r := newRig(t, jsonApp("x", 0, nil), refusing+","+green.Listener.Addr().String(), shadow.Options{})
	r.start(100, []string{"GET"}, "slot")
	const n = 60
	if failed := r.load(t, n, 4, 200, r.get("/api/test")); failed != 0 {
		t.Fatalf("%d prod requests failed", failed)
	}
	f := r.settled(t, n)
	if f.Error != 0 || f.Same != n || served.Load() != n {
		t.Fatalf("copies: %d same, %d errors, %d served by the live instance; want all %d compared there: %+v", f.Same, f.Error, served.Load(), n, f)
	}
}

// start puts a shadow to green in force.
func (r *rig) start(percent int, methods []string, ignore ...string) {
	r.m.Set(&state.Shadow{To: "green", PerMille: percent * 10, Methods: methods, Started: time.Now().UTC(), IgnoreFields: ignore})
}

// load sends n requests from c clients to prod and returns how many failed
// (an error or a status other than want).
func (r *rig) load(t *testing.T, n, c int, want int, req func(i int) *http.Request) int64 {
	t.Helper()
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				resp, err := r.client.Do(req(i))
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return failed.Load()
}

func (r *rig) get(path string) func(int) *http.Request {
	return func(i int) *http.Request {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s%s?i=%d", r.prod, path, i), nil)
		return req
	}
}

// settled waits until every sampled copy has a result, and returns the
// figures.
func (r *rig) settled(t testing.TB, sampled uint64) *wire.ShadowFigures {
	t.Helper()
	var f *wire.ShadowFigures
	vstest.WaitFor(t, 10*time.Second, func() error {
		f = r.m.Figures()
		done := f.Same + f.Differ + f.Error + f.Dropped["total"]
		if f.Sampled != sampled || done != sampled {
			return fmt.Errorf("sampled %d (want %d), %d with a result: %+v", f.Sampled, sampled, done, f)
		}
		if now, _ := r.m.Held(); now != 0 {
			return fmt.Errorf("%d bytes still held", now)
		}
		return nil
	})
	return f
}

// jsonApp answers like the sample app: {"slot","n"}, and "differ" on every
// nth request when every > 0.
func jsonApp(slot string, every int64, seen *atomic.Int64) http.HandlerFunc {
	var count atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		if seen != nil {
			seen.Add(1)
		}
		body := map[string]any{"slot": slot, "path": r.URL.Path, "query": r.URL.RawQuery}
		if every > 0 && count.Add(1)%every == 0 {
			body["differ"] = true
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	}
}

func TestIdenticalTargetComparesSame(t *testing.T) {
	var marks, pins, cookies atomic.Int64
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(proxy.ShadowHeader) == "copy" {
			marks.Add(1)
		}
		if r.Header.Get("X-Vipswap-Slot") != "" {
			pins.Add(1)
		}
		if c, err := r.Cookie("vipswap_slot"); err == nil && c != nil {
			cookies.Add(1)
		}
		jsonApp("x", 0, nil)(w, r)
	}))
	t.Cleanup(green.Close)
	var claimed atomic.Int64
	r := newRig(t, func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get(proxy.ShadowHeader) != "" {
			claimed.Add(1) // a client's claim reached prod
		}
		jsonApp("x", 0, nil)(w, req)
	}, green.Listener.Addr().String(), shadow.Options{AffinityCookie: "vipswap_slot"})
	r.start(100, []string{"GET", "HEAD"}, "slot")
	const n = 300
	failed := r.load(t, n, 20, 200, func(i int) *http.Request {
		req := r.get("/api/test")(i)
		req.Header.Set(proxy.ShadowHeader, "copy") // a client claiming to be a copy
		req.AddCookie(&http.Cookie{Name: "vipswap_slot", Value: "blue~forged"})
		req.AddCookie(&http.Cookie{Name: "session", Value: "s1"})
		return req
	})
	if failed != 0 {
		t.Errorf("%d prod requests failed, want 0", failed)
	}
	f := r.settled(t, n)
	if f.Differ != 0 || f.Error != 0 {
		t.Errorf("differ %d, error %d, want 0 and 0 (samples %+v)", f.Differ, f.Error, f.Samples)
	}
	if f.Same+f.Dropped["queue_full"] != n || f.Same == 0 {
		t.Errorf("same %d + queue_full %d, want %d in all", f.Same, f.Dropped["queue_full"], n)
	}
	if marks.Load() != int64(f.Same) {
		t.Errorf("%d copies carried %s: copy, want all %d", marks.Load(), proxy.ShadowHeader, f.Same)
	}
	if pins.Load() != 0 || cookies.Load() != 0 {
		t.Errorf("%d copies carried the pin header and %d the affinity cookie, want none", pins.Load(), cookies.Load())
	}
	if claimed.Load() != 0 {
		t.Errorf("a client's %s reached prod's instance %d times, want never", proxy.ShadowHeader, claimed.Load())
	}
	t.Logf("figures: same %d, prod p99 %.2fms, target p99 %.2fms", f.Same, f.ProdP99MS, f.TargetP99MS)
}

func TestDifferingAnswersAreSampledWithTheirJSONPath(t *testing.T) {
	green := httptest.NewServer(jsonApp("x", 50, nil))
	t.Cleanup(green.Close)
	r := newRig(t, jsonApp("x", 0, nil), green.Listener.Addr().String(), shadow.Options{QueueSize: 4096})
	r.start(100, []string{"GET"})
	const n = 1000
	if failed := r.load(t, n, 8, 200, r.get("/api/test")); failed != 0 {
		t.Fatalf("%d prod requests failed, want 0", failed)
	}
	f := r.settled(t, n)
	if f.Dropped["total"] != 0 {
		t.Fatalf("dropped %v, want none with a queue this long", f.Dropped)
	}
	if f.Differ != n/50 || f.DifferRate < 0.015 || f.DifferRate > 0.025 {
		t.Errorf("differ %d (rate %.4f), want %d (2%%)", f.Differ, f.DifferRate, n/50)
	}
	if len(f.Samples) == 0 || f.Samples[0].Where != "$.differ" || f.Samples[0].Prod != "(absent)" || f.Samples[0].Target != "true" {
		t.Errorf("samples %+v, want the JSON path $.differ, absent on prod, true on the target", f.Samples)
	}
	if !strings.HasPrefix(f.Samples[0].Request, "GET /api/test?i=") {
		t.Errorf("sample request line %q, want GET /api/test?i=…", f.Samples[0].Request)
	}

	// With the field ignored, the same answers compare the same.
	r.start(100, []string{"GET"}, "differ")
	if failed := r.load(t, 500, 8, 200, r.get("/api/test")); failed != 0 {
		t.Fatalf("%d prod requests failed, want 0", failed)
	}
	f = r.settled(t, 500)
	if f.Differ != 0 || f.Same != 500 {
		t.Errorf("with differ ignored: same %d, differ %d, want 500 and 0", f.Same, f.Differ)
	}
}

func TestComparisonFindsWhatDiffers(t *testing.T) {
	type answer struct {
		status int
		ctype  string
		header string
		body   string
	}
	prodA := answer{200, "application/json", "a", `{"a":{"b":[1,2,{"c":"x"}]},"ts":1}`}
	cases := []struct {
		name   string
		target answer
		ignore []string
		where  string
	}{
		{"the same", prodA, nil, ""},
		{"status class", answer{500, prodA.ctype, "a", prodA.body}, nil, "status class"},
		{"status code", answer{201, prodA.ctype, "a", prodA.body}, nil, "status"},
		{"content type", answer{200, "text/plain", "a", prodA.body}, nil, "content-type"},
		{"a header", answer{200, prodA.ctype, "b", prodA.body}, nil, "header X-Version"},
		{"a header ignored", answer{200, prodA.ctype, "b", prodA.body}, []string{"header:X-Version"}, ""},
		{"a nested JSON value", answer{200, prodA.ctype, "a", `{"a":{"b":[1,2,{"c":"y"}]},"ts":1}`}, nil, "$.a.b[2].c"},
		{"a field ignored by name", answer{200, prodA.ctype, "a", `{"a":{"b":[1,2,{"c":"x"}]},"ts":2}`}, []string{"ts"}, ""},
		{"a field ignored by path", answer{200, prodA.ctype, "a", `{"a":{"b":[1,2,{"c":"z"}]},"ts":1}`}, []string{"$.a.b.c"}, ""},
		{"key order and spacing", answer{200, prodA.ctype, "a", `{ "ts":1, "a":{"b":[1,2,{"c":"x"}]} }`}, nil, ""},
		{"a number written otherwise", answer{200, prodA.ctype, "a", `{"a":{"b":[1.0,2e0,{"c":"x"}]},"ts":10e-1}`}, nil, ""},
		{"another number", answer{200, prodA.ctype, "a", `{"a":{"b":[1,2.5,{"c":"x"}]},"ts":1}`}, nil, "$.a.b[1]"},
		{"an array's length", answer{200, prodA.ctype, "a", `{"a":{"b":[1,2]},"ts":1}`}, nil, "$.a.b.length"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			serve := func(a answer) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", a.ctype)
					w.Header().Set("X-Version", a.header)
					w.WriteHeader(a.status)
					io.WriteString(w, a.body)
				}
			}
			green := httptest.NewServer(serve(tc.target))
			t.Cleanup(green.Close)
			var o shadow.Options
			var fields []string
			for _, ig := range tc.ignore {
				if h, ok := strings.CutPrefix(ig, "header:"); ok {
					o.IgnoreHeaders = append(o.IgnoreHeaders, h)
				} else {
					fields = append(fields, ig)
				}
			}
			r := newRig(t, serve(prodA), green.Listener.Addr().String(), o)
			r.start(100, []string{"GET"}, fields...)
			if failed := r.load(t, 1, 1, 200, r.get("/x")); failed != 0 {
				t.Fatalf("the prod request failed")
			}
			f := r.settled(t, 1)
			switch {
			case tc.where == "" && f.Same != 1:
				t.Errorf("want the same, got %+v", f.Samples)
			case tc.where != "" && (f.Differ != 1 || f.Samples[0].Where != tc.where):
				t.Errorf("want a difference at %q, got differ %d, samples %+v", tc.where, f.Differ, f.Samples)
			}
		})
	}
}

func TestTextBodiesDifferAtAByteOffset(t *testing.T) {
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello world") }))
	t.Cleanup(green.Close)
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello there") }, green.Listener.Addr().String(), shadow.Options{})
	r.start(100, []string{"GET"})
	r.load(t, 1, 1, 200, r.get("/"))
	f := r.settled(t, 1)
	if f.Differ != 1 || f.Samples[0].Where != "byte 6" {
		t.Errorf("got %+v, want a difference at byte 6", f.Samples)
	}
}

func TestOnlyNamedMethodsAndSmallBodiesAreCopied(t *testing.T) {
	var posts atomic.Int64
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			if string(b) == "payload" {
				posts.Add(1)
			}
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(green.Close)
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body); io.WriteString(w, "ok") },
		green.Listener.Addr().String(), shadow.Options{BodyLimit: 1024})
	post := func(body string) func(int) *http.Request {
		return func(int) *http.Request {
			req, _ := http.NewRequest("POST", r.prod+"/w", strings.NewReader(body))
			return req
		}
	}
	r.start(100, []string{"GET", "HEAD"})
	r.load(t, 5, 1, 200, post("payload"))
	if f := r.m.Figures(); f.Sampled != 0 || posts.Load() != 0 {
		t.Fatalf("POST not named: %d sampled, %d copied; want none", f.Sampled, posts.Load())
	}
	r.start(100, []string{"POST"})
	r.load(t, 5, 1, 200, post("payload"))
	r.load(t, 3, 1, 200, post(strings.Repeat("x", 2000)))
	r.load(t, 2, 1, 200, func(int) *http.Request { // chunked: streamed, never whole
		req, _ := http.NewRequest("POST", r.prod+"/w", io.MultiReader(strings.NewReader("chunk")))
		req.ContentLength = -1
		return req
	})
	f := r.settled(t, 10)
	if f.Same != 5 || posts.Load() != 5 || f.Dropped["too_large"] != 5 {
		t.Errorf("same %d, copied %d, too_large %d; want 5, 5, 5", f.Same, posts.Load(), f.Dropped["too_large"])
	}
}

// readHead reads a request head from c.
func readHead(c net.Conn) bool {
	buf := make([]byte, 4096)
	var got []byte
	for !bytes.Contains(got, []byte("\r\n\r\n")) {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		got = append(got, buf[:n]...)
	}
	return true
}

func TestHostileTargetsNeverTouchProd(t *testing.T) {
	cases := []struct {
		name  string
		serve func(c net.Conn)
		check func(t *testing.T, f *wire.ShadowFigures)
	}{
		{"hangs", func(c net.Conn) { readHead(c); io.Copy(io.Discard, c) }, func(t *testing.T, f *wire.ShadowFigures) {
			if f.Error == 0 || f.Dropped["queue_full"] == 0 {
				t.Errorf("error %d, queue_full %d: want both counted", f.Error, f.Dropped["queue_full"])
			}
		}},
		{"answers garbage", func(c net.Conn) {
			for readHead(c) {
				io.WriteString(c, "HELLO THERE\r\n\r\n")
			}
		}, func(t *testing.T, f *wire.ShadowFigures) {
			if f.Error == 0 || f.Same+f.Differ != 0 {
				t.Errorf("error %d, compared %d: want errors only", f.Error, f.Same+f.Differ)
			}
		}},
		{"never ends its body", func(c net.Conn) {
			if !readHead(c) {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
			chunk := bytes.Repeat([]byte("x"), 32<<10)
			for {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}, func(t *testing.T, f *wire.ShadowFigures) {
			// Cut at the limit: longer than prod's "ok" for certain. (A
			// busy machine may not read the limit within the timeout:
			// an error then, not a comparison.)
			if f.Differ == 0 || f.Same != 0 {
				t.Errorf("differ %d, same %d: want the endless body cut at the limit and differing by its length", f.Differ, f.Same)
			}
			for _, d := range f.Samples {
				if d.Where != "body length" && !strings.HasPrefix(d.Where, "error: no answer within") && !strings.HasPrefix(d.Where, "error: answer body: not whole within") {
					t.Errorf("sample %+v: want a difference in the body's length", d)
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := vstest.Serve(t, tc.serve)
			r := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, "ok")
			}, addr, shadow.Options{MaxConns: 2, QueueSize: 4, Timeout: 300 * time.Millisecond, CompareLimit: 256 << 10, StopErrorRate: 2})
			r.start(100, []string{"GET"})
			const n = 200
			if failed := r.load(t, n, 20, 200, r.get("/")); failed != 0 {
				t.Errorf("%d prod requests failed, want 0", failed)
			}
			f := r.settled(t, n)
			tc.check(t, f)
			t.Logf("figures: same %d, differ %d, error %d, dropped %v", f.Same, f.Differ, f.Error, f.Dropped)
		})
	}
}

func TestRefusingTargetStopsTheMirror(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, dead,
		shadow.Options{StopMinRequests: 20, QueueSize: 4096})
	r.start(100, []string{"GET"})
	if failed := r.load(t, 200, 10, 200, r.get("/")); failed != 0 {
		t.Errorf("%d prod requests failed, want 0", failed)
	}
	var why string
	select {
	case why = <-r.stops:
	case <-time.After(vstest.MinWait):
		t.Fatal("the mirror did not stop itself")
	}
	if !strings.Contains(why, "slot green failed") {
		t.Errorf("stop reason %q, want it to name the slot's failures", why)
	}
	f := r.m.Figures()
	if f.Stopped != why || f.Error < 20 {
		t.Errorf("figures %+v: want stopped with its reason after at least 20 errors", f)
	}
	before := f.Sampled
	r.load(t, 50, 5, 200, r.get("/"))
	if f := r.m.Figures(); f.Sampled != before {
		t.Errorf("a stopped mirror sampled %d more requests, want none", f.Sampled-before)
	}
}

func TestFloodOfLargeRequestsStaysWithinMemory(t *testing.T) {
	release := make(chan struct{})
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select { // slow: the queue fills
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); green.Close() })
	const maxMem = 1 << 20
	const bodySize = 60 << 10
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body); io.WriteString(w, "ok") },
		green.Listener.Addr().String(),
		shadow.Options{MaxMemory: maxMem, MaxConns: 2, QueueSize: 10000, KeepLimit: 4 << 10, Timeout: time.Second, StopErrorRate: 2})
	r.start(100, []string{"PUT"})
	body := bytes.Repeat([]byte("b"), bodySize)
	const n, clients = 400, 20
	failed := r.load(t, n, clients, 200, func(int) *http.Request {
		req, _ := http.NewRequest("PUT", r.prod+"/upload", bytes.NewReader(body))
		return req
	})
	if failed != 0 {
		t.Errorf("%d prod requests failed, want 0", failed)
	}
	f := r.settled(t, n)
	_, peak := r.m.Held()
	if peak > maxMem {
		t.Errorf("the mirror held %d bytes at its peak, above its limit of %d", peak, maxMem)
	}
	if f.Dropped["memory"] == 0 {
		t.Errorf("dropped %v: want copies dropped for memory", f.Dropped)
	}
	t.Logf("peak held %d bytes of %d; dropped %v", peak, maxMem, f.Dropped)
}

func TestNoCopyToTheSlotThatAnswered(t *testing.T) {
	var hits atomic.Int64
	r := newRig(t, jsonApp("blue", 0, &hits), "127.0.0.1:1", shadow.Options{})
	r.m.Set(&state.Shadow{To: "blue", PerMille: 1000, Methods: []string{"GET"}, Started: time.Now()})
	r.load(t, 20, 2, 200, r.get("/"))
	if f := r.m.Figures(); f.Sampled != 0 || hits.Load() != 20 {
		t.Errorf("sampled %d, blue served %d: want no copy, 20 requests", f.Sampled, hits.Load())
	}
}

func TestPercentSamplesAShare(t *testing.T) {
	green := httptest.NewServer(jsonApp("x", 0, nil))
	t.Cleanup(green.Close)
	r := newRig(t, jsonApp("x", 0, nil), green.Listener.Addr().String(), shadow.Options{})
	r.start(25, []string{"GET"})
	const n = 800
	r.load(t, n, 8, 200, r.get("/"))
	f := r.m.Figures()
	if f.Sampled < n/4-80 || f.Sampled > n/4+80 {
		t.Errorf("sampled %d of %d at 25%%, want about %d", f.Sampled, n, n/4)
	}
	r.settled(t, f.Sampled)
}

func TestClientThatLeavesReleasesItsCopy(t *testing.T) {
	green := httptest.NewServer(jsonApp("x", 0, nil))
	t.Cleanup(green.Close)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	r := newRig(t, func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		chunk := bytes.Repeat([]byte("y"), 32<<10)
		for { // an answer longer than the client cares to read
			if _, err := w.Write(chunk); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-req.Context().Done():
				return
			default:
			}
		}
	}, green.Listener.Addr().String(), shadow.Options{})
	r.start(100, []string{"GET"})
	const n = 5
	for i := range n {
		c, err := net.Dial("tcp", strings.TrimPrefix(r.prod, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /big?i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		buf := make([]byte, 1024)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		c.Close() // gone mid-answer
	}
	f := r.settled(t, n)
	if f.Dropped["prod_failed"] != n {
		t.Errorf("dropped %v, want %d prod_failed: a copy of an answer the client never got whole is not sent", f.Dropped, n)
	}
}

func TestCopiesReachASlotAsProdDoes(t *testing.T) {
	for _, proto := range []proxy.Protocol{proxy.HTTP1, proxy.H2, proxy.H2C} {
		t.Run(string(proto), func(t *testing.T) {
			var seen atomic.Value
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Store(fmt.Sprintf("%s tls=%v", r.Proto, r.TLS != nil))
				jsonApp("x", 0, nil)(w, r)
			})
			green := httptest.NewUnstartedServer(h)
			up := &proxy.Upstream{Protocol: proto, Fingerprint: string(proto)}
			switch proto {
			case proxy.H2C:
				green.Config.Protocols = new(http.Protocols)
				green.Config.Protocols.SetUnencryptedHTTP2(true)
				green.Start()
			default:
				green.EnableHTTP2 = proto == proxy.H2
				green.StartTLS()
				up.TLS = &tls.Config{RootCAs: green.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
			}
			t.Cleanup(green.Close)
			r := newRig(t, jsonApp("x", 0, nil), green.Listener.Addr().String(), shadow.Options{})
			r.p.Reconfigure(proxy.Options{PinHeader: "X-Vipswap-Slot", Upstreams: map[string]*proxy.Upstream{"green": up}})
			r.start(100, []string{"GET"})
			r.load(t, 3, 1, 200, r.get("/"))
			f := r.settled(t, 3)
			want := map[proxy.Protocol]string{proxy.HTTP1: "HTTP/1.1 tls=true", proxy.H2: "HTTP/2.0 tls=true", proxy.H2C: "HTTP/2.0 tls=false"}[proto]
			if f.Same != 3 || seen.Load() != want {
				t.Errorf("same %d (samples %+v), green saw %v; want 3 copies over %s", f.Same, f.Samples, seen.Load(), want)
			}
		})
	}
}

func TestLargeProdAnswersStayWithinMemory(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 200<<10)
	answer := func(w http.ResponseWriter, r *http.Request) { w.Write(big) }
	release := make(chan struct{})
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // slow: copies wait in the queue, holding prod's answers
		case <-release:
		case <-r.Context().Done():
			return
		}
		answer(w, r)
	}))
	t.Cleanup(green.Close)
	const maxMem = 1 << 20
	r := newRig(t, answer, green.Listener.Addr().String(), shadow.Options{MaxMemory: maxMem, KeepLimit: 512 << 10, MaxConns: 2, StopErrorRate: 2})
	r.start(100, []string{"GET"})
	const n = 20
	if failed := r.load(t, n, 10, 200, r.get("/big")); failed != 0 {
		t.Fatalf("%d prod requests failed", failed)
	}
	close(release)
	f := r.settled(t, n)
	if _, peak := r.m.Held(); peak > maxMem {
		t.Errorf("peak held %d bytes, above %d", peak, maxMem)
	}
	if f.Same != n || f.Differ != 0 {
		t.Errorf("same %d, differ %d (%+v): want every answer compared the same, by hash when it could not be kept", f.Same, f.Differ, f.Samples)
	}
}

func TestA5xxProdAnsweredTooIsNoTargetError(t *testing.T) {
	fail := func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }
	green := httptest.NewServer(http.HandlerFunc(fail))
	t.Cleanup(green.Close)
	r := newRig(t, fail, green.Listener.Addr().String(), shadow.Options{})
	r.start(100, []string{"GET"})
	r.load(t, 10, 2, http.StatusServiceUnavailable, r.get("/"))
	f := r.settled(t, 10)
	if f.Same != 10 || f.TargetErrors != 0 || f.ErrorRate != 0 {
		t.Errorf("same %d, target errors %d (rate %.2f): want 10 the same and no target error when prod failed alike", f.Same, f.TargetErrors, f.ErrorRate)
	}
}
