package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// instance is a test instance answering its own name.
type instance struct {
	*httptest.Server
	name string
	hits atomic.Int64
	inst *route.Instance
}

func newInstance(t *testing.T, slot, name string, h http.HandlerFunc) *instance {
	t.Helper()
	in := &instance{name: name}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }
	}
	in.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(in.Close)
	in.inst = route.NewInstance(slot, in.Listener.Addr().String())
	return in
}

// deadAddr returns an address on which nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// table routes prod to blue and stage to green.
func table(rev uint64, blue, green []*route.Instance) *route.Table {
	var spec route.Spec
	spec.Revision = rev
	spec.Listeners[route.Prod] = []route.Weighted{{Slot: "blue", Weight: 1}}
	spec.Listeners[route.Stage] = []route.Weighted{{Slot: "green", Weight: 1}}
	spec.Routable = map[string][]*route.Instance{"blue": blue, "green": green}
	return route.Build(spec)
}

// serve starts p's prod and stage listeners and returns their base URLs.
func serve(t *testing.T, p *Proxy) (prod, stage string) {
	t.Helper()
	urls := make([]string, 2)
	for _, l := range route.Listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		urls[l] = "http://" + ln.Addr().String()
		go p.Serve(l, ln)
	}
	t.Cleanup(func() {
		// Only ends a shutdown that hangs: a busy machine may be slow.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return urls[0], urls[1]
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestListenersFollowTheirSlot(t *testing.T) {
	b := newInstance(t, "blue", "b1", nil)
	g := newInstance(t, "green", "g1", nil)
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{b.inst}, []*route.Instance{g.inst}))
	prod, stage := serve(t, p)
	if _, body := get(t, prod); body != "b1" {
		t.Errorf("prod answered %q, want b1", body)
	}
	if _, body := get(t, stage); body != "g1" {
		t.Errorf("stage answered %q, want g1", body)
	}
	// A swap is a new table.
	p.Apply(table(2, []*route.Instance{g.inst}, []*route.Instance{b.inst}))
	if _, body := get(t, prod); body != "g1" {
		t.Errorf("after swap prod answered %q, want g1", body)
	}
	if got := g.inst.Served(route.Stage) + g.inst.Served(route.Prod); got != 2 {
		t.Errorf("g1 served %d requests, want 2", got)
	}
}

func TestPickSpreadsByLoad(t *testing.T) {
	var insts []*instance
	for i := range 3 {
		insts = append(insts, newInstance(t, "blue", fmt.Sprint("b", i), nil))
	}
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{insts[0].inst, insts[1].inst, insts[2].inst}, nil))
	prod, _ := serve(t, p)
	for range 90 {
		get(t, prod)
	}
	for _, in := range insts {
		if n := in.hits.Load(); n == 0 {
			t.Errorf("%s got no requests", in.name)
		}
	}
}

func TestRetryOnRefusedConnection(t *testing.T) {
	live := newInstance(t, "blue", "live", nil)
	dead := route.NewInstance("blue", deadAddr(t))
	var refused atomic.Int64
	p := New(Options{OnRefused: func(i *route.Instance) {
		if i == dead {
			refused.Add(1)
		}
	}})
	p.Apply(table(1, []*route.Instance{dead, live.inst}, nil))
	prod, _ := serve(t, p)
	for i := range 20 {
		// POST with a body: a refused connection never sent it, so any
		// method may be retried.
		resp, err := http.Post(prod, "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("request %d: status %d %s, want 200", i, resp.StatusCode, b)
		}
	}
	if refused.Load() == 0 {
		t.Error("OnRefused was never called for the dead instance")
	}
	if dead.InFlight(route.Prod) != 0 || live.inst.InFlight(route.Prod) != 0 {
		t.Error("in-flight counts did not return to zero")
	}
}

// cutter reads the request, then drops the connection without answering.
func cutter(w http.ResponseWriter, r *http.Request) {
	io.ReadAll(r.Body)
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestRetryAfterSendOnlyWhenIdempotent(t *testing.T) {
	bad := newInstance(t, "blue", "bad", cutter)
	good := newInstance(t, "blue", "good", nil)
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{bad.inst, good.inst}, nil))
	prod, _ := serve(t, p)

	t.Run("GET is retried on another instance", func(t *testing.T) {
		for range 10 {
			if code, body := get(t, prod); code != 200 || body != "good" {
				t.Fatalf("got %d %q, want 200 good", code, body)
			}
		}
	})
	t.Run("POST with a body is not resent", func(t *testing.T) {
		// Only the bad instance is routable, so the POST must reach it.
		p.Apply(table(2, []*route.Instance{bad.inst}, nil))
		before := bad.hits.Load()
		resp, err := http.Post(prod, "text/plain", strings.NewReader("charge the card"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || string(body) != "vipswap: no instance of slot \"blue\" answered (1 tried)\n" {
			t.Fatalf("got %d %q, want 502 naming the slot", resp.StatusCode, body)
		}
		if strings.Contains(string(body), bad.inst.Addr) {
			t.Fatalf("the answer to the client names the instance address: %q", body)
		}
		if n := bad.hits.Load() - before; n != 1 {
			t.Fatalf("instance received the POST %d times, want exactly 1", n)
		}
	})
}

func TestRetryOnDrainingAnswer(t *testing.T) {
	draining := newInstance(t, "blue", "draining", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	good := newInstance(t, "blue", "good", nil)
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{draining.inst, good.inst}, nil))
	prod, _ := serve(t, p)
	// The picker chooses the draining instance first about half the time;
	// keep going until it has been tried a few times, so the retry is
	// exercised, not just possible.
	for i := 0; draining.hits.Load() < 3; i++ {
		if i == 500 {
			t.Fatalf("the draining instance was tried %d times in 500 requests, want 3", draining.hits.Load())
		}
		if code, _ := get(t, prod); code != 200 {
			t.Fatalf("GET got %d, want 200 from the other instance", code)
		}
	}
}

func TestHoldUntilAnInstanceAppears(t *testing.T) {
	in := newInstance(t, "blue", "late", nil)
	p := New(Options{Hold: 10 * time.Second})
	p.Apply(table(1, nil, nil))
	prod, _ := serve(t, p)
	done := make(chan string, 1)
	go func() {
		resp, err := http.Get(prod)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()
	vstest.WaitFor(t, 5*time.Second, func() error { return expect(p.holding.Load() == 1) })
	p.Apply(table(2, []*route.Instance{in.inst}, nil))
	if got := <-done; got != "200 late" {
		t.Fatalf("held request got %q, want 200 late", got)
	}
}

func TestHoldTimesOutWithReason(t *testing.T) {
	p := New(Options{Hold: 50 * time.Millisecond})
	p.Apply(table(1, nil, nil))
	prod, _ := serve(t, p)
	code, body := get(t, prod)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `no instance of slot "blue" is available`) {
		t.Fatalf("got %d %q, want 503 naming slot blue", code, body)
	}
	if p.Failed(route.Prod) != 1 {
		t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
	}
}

func TestHoldingIsBounded(t *testing.T) {
	p := New(Options{Hold: 10 * time.Second, MaxHolding: 1})
	p.Apply(table(1, nil, nil))
	prod, _ := serve(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, prod, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	vstest.WaitFor(t, 5*time.Second, func() error { return expect(p.holding.Load() == 1) })
	code, body := get(t, prod)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "too many requests waiting") {
		t.Fatalf("got %d %q, want an immediate 503", code, body)
	}
	cancel()
	vstest.WaitFor(t, 5*time.Second, func() error { return expect(p.holding.Load() == 0) })
}

func TestHeaders(t *testing.T) {
	seen := make(chan http.Header, 1)
	host := make(chan string, 1)
	in := newInstance(t, "blue", "h", func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		host <- r.Host
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-App", "yes")
	})
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	prod, _ := serve(t, p)
	req, _ := http.NewRequest(http.MethodGet, prod+"/x", nil)
	req.Host = "shop.example"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop")
	req.Header.Set("Proxy-Authorization", "hop")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := <-seen
	checks := map[string]string{
		"X-Forwarded-For":     "203.0.113.9, 127.0.0.1",
		"X-Forwarded-Host":    "shop.example",
		"X-Forwarded-Proto":   "http",
		"X-Secret":            "",
		"Proxy-Authorization": "",
	}
	for k, want := range checks {
		if got := h.Get(k); got != want {
			t.Errorf("instance saw %s = %q, want %q", k, got, want)
		}
	}
	if got := <-host; got != "shop.example" {
		t.Errorf("instance saw Host %q, want shop.example", got)
	}
	if resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-App") != "yes" {
		t.Errorf("response headers %v: want Keep-Alive removed and X-App kept", resp.Header)
	}
}

func TestResponseIsStreamed(t *testing.T) {
	release := make(chan struct{})
	in := newInstance(t, "blue", "s", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
	})
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	prod, _ := serve(t, p)
	resp, err := http.Get(prod)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk %q, %v", line, err)
	}
	if n := in.inst.InFlight(route.Prod); n != 1 {
		t.Errorf("in flight while streaming = %d, want 1", n)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestUpgradePassesThrough(t *testing.T) {
	in := echoUpgrader(t)
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	prod, _ := serve(t, p)
	upgradeToEcho(t, prod)
	if n := in.inst.InFlight(route.Prod); n != 1 {
		t.Errorf("upgraded connection in flight = %d, want 1", n)
	}
}

// echoUpgrader is an instance that switches a request asking for
// "Upgrade: echo" to a protocol that echoes a line back ("echo: " and the
// line), then waits for its client to go; any other request gets "plain".
func echoUpgrader(t *testing.T) *instance { return newInstance(t, "blue", "ws", echoUpgrade) }

// echoUpgrade is echoUpgrader's handler.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo" {
		io.WriteString(w, "plain")
		return
	}
	conn, brw, err := switchToEcho(w)
	if err != nil {
		return
	}
	defer conn.Close()
	line, _ := brw.ReadString('\n')
	brw.WriteString("echo: " + line)
	brw.Flush()
	brw.ReadString('\n') // until the client goes
}

// switchToEcho answers 101 Switching Protocols to "echo" and takes the
// connection over, as an instance's handler.
func switchToEcho(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", "echo")
	w.WriteHeader(http.StatusSwitchingProtocols)
	return w.(http.Hijacker).Hijack()
}

// upgradeToEcho opens a connection to prod, switches it to echoUpgrader's
// protocol, checks that a line comes back echoed, and leaves the tunnel
// open until the test ends.
func upgradeToEcho(t *testing.T, prod string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade response %v, %v", resp, err)
	}
	fmt.Fprintf(conn, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo: hello\n" {
		t.Fatalf("got %q, %v", line, err)
	}
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	in := newInstance(t, "blue", "slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release // the instance's slow work
		io.WriteString(w, "done")
	})
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() { p.Serve(route.Prod, ln) })
	got := make(chan string, 1)
	go func() {
		code, body := get(t, "http://"+addr)
		got <- fmt.Sprint(code, " ", body)
	}()
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- p.Shutdown(context.Background()) }()
	// Once it no longer accepts, Shutdown is waiting for the request.
	vstest.WaitFor(t, 5*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if g := <-got; g != "200 done" {
		t.Fatalf("in-flight request got %q, want 200 done", g)
	}
}

// TestShutdownWaitsForTunnelsOnDrainedInstances (issue 9, point 7): an
// upgraded connection on an instance that is no longer routable is still in
// flight, and Shutdown waits for it.
func TestShutdownWaitsForTunnelsOnDrainedInstances(t *testing.T) {
	release := make(chan struct{})
	in := newInstance(t, "blue", "ws", func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := switchToEcho(w)
		if err != nil {
			return
		}
		defer conn.Close()
		<-release
	})
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.Serve(route.Prod, ln) })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	p.Apply(table(2, nil, nil)) // the instance is drained
	stopped := make(chan error, 1)
	go func() { stopped <- p.Shutdown(context.Background()) }()
	vstest.WaitFor(t, 5*time.Second, func() error {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) with a tunnel open", err)
	case <-time.After(100 * time.Millisecond): // a chance to return wrongly
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// expect turns a condition into an error for vstest.WaitFor.
func expect(ok bool) error {
	if !ok {
		return errors.New("not yet")
	}
	return nil
}

func TestRecordDoesNotAllocate(t *testing.T) {
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{route.NewInstance("blue", "127.0.0.1:1")}, nil))
	slot := p.table.Load().Slot(route.Prod)
	p.stats(slot) // the first request of a new slot adds its counters
	if n := testing.AllocsPerRun(1000, func() {
		failed := outcome{status: 503, latency: 12 * time.Millisecond, total: 13 * time.Millisecond, failed: true,
			judged: true, source: sourceGroup("[2001:db8::1]:4000"), path: -1}
		p.stats(slot)[route.Prod].record(&failed)
		ok := outcome{status: 200, latency: time.Microsecond, path: -1}
		p.stats(nil)[route.Stage].record(&ok)
	}); n != 0 {
		t.Fatalf("recording a request allocates %.1f times, want 0", n)
	}
	c := p.Counters(route.Prod)["blue"]
	if c.Classes[5] == 0 || c.Requests() != c.Classes[5] || c.Latency.Buckets[11] != c.Classes[5] || c.Judged.Errors != c.Classes[5] {
		t.Fatalf("counters %+v: want every request as 5xx in the 10-12.5 ms bucket", c)
	}
}

// TestAccessLog: one record per request, with what the client is not told
// when vipswap answers itself.
func TestAccessLog(t *testing.T) {
	var buf vstest.Buffer
	in := newInstance(t, "blue", "a", nil)
	dead := route.NewInstance("blue", deadAddr(t))
	p := New(Options{Hold: 50 * time.Millisecond, AccessLog: &AccessLog{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Sample: 1}})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	prod, _ := serve(t, p)
	if code, _ := get(t, prod+"/ok?x=1"); code != 200 {
		t.Fatalf("got %d", code)
	}
	p.Apply(table(2, []*route.Instance{dead}, nil))
	if code, body := get(t, prod+"/broken"); code != 502 || strings.Contains(body, dead.Addr) {
		t.Fatalf("got %d %q, want a 502 that does not name the instance", code, body)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d records, want 2:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{
		`msg=request listener=prod method=GET uri="/ok?x=1" status=200 slot=blue instance=` + in.inst.Addr + ` attempts=1`,
		`msg=request listener=prod method=GET uri=/broken status=502 slot=blue instance="" attempts=1`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("record %d:\n%s\nwant it to contain\n%s", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[1], "error=") || !strings.Contains(lines[1], dead.Addr) {
		t.Errorf("the failure's record does not say what went wrong: %s", lines[1])
	}
}

// TestLoopIsRefused (issue 10, point 6): an instance address that leads back
// to vipswap's own listener makes a request come back; it is answered 508
// instead of being forwarded again and again.
func TestLoopIsRefused(t *testing.T) {
	p := New(Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := route.NewInstance("blue", "localhost:"+strings.Split(ln.Addr().String(), ":")[1])
	p.Apply(table(1, []*route.Instance{self}, nil))
	var wg sync.WaitGroup
	wg.Go(func() { p.Serve(route.Prod, ln) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		wg.Wait()
	})
	code, body := get(t, "http://"+ln.Addr().String()+"/")
	if code != http.StatusLoopDetected || !strings.Contains(body, "came back to vipswap") {
		t.Fatalf("got %d %q, want 508", code, body)
	}
	if n := p.Conns(route.Prod); n > 2 {
		t.Fatalf("%d connections on the listener: the request looped", n)
	}
}
