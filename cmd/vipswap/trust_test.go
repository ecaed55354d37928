package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/internal/vstest/switchtest"
	"github.com/vipswap/vipswap/wire"
)

// clientFrom returns an HTTP client whose connections come from ip (any
// 127.x address on loopback): another client, as far as vipswap can tell.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{
		Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16, Proxy: nil},
		Timeout:   30 * time.Second,
	}
}

// traffic sends requests from several goroutines until stopped, counting
// what each answer was.
type traffic struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sent   atomic.Int64
	status [6]atomic.Int64 // by class
	errs   atomic.Int64    // transport errors
}

// startTraffic starts n goroutines, each calling next for its next
// request and sending it with hc until stop: as fast as answers come, or
// at most one every pace.
func startTraffic(hc *http.Client, n int, pace time.Duration, next func(i int) *http.Request) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{cancel: cancel}
	for g := range n {
		tr.wg.Go(func() {
			var tick <-chan time.Time
			if pace > 0 {
				t := time.NewTicker(pace)
				defer t.Stop()
				tick = t.C
			}
			for i := g; ctx.Err() == nil; i += n {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				req := next(i).WithContext(ctx)
				resp, err := hc.Do(req)
				tr.sent.Add(1)
				if err != nil {
					if ctx.Err() == nil {
						tr.errs.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if c := resp.StatusCode / 100; c >= 1 && c <= 5 {
					tr.status[c].Add(1)
				}
			}
		})
	}
	return tr
}

func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

// realUsers are three clients from their own addresses, each sending a
// request every 40 ms, one checkout in ten besides /api/test.
func realUsers(base string) []*traffic {
	var out []*traffic
	for _, ip := range []string{"127.0.1.1", "127.0.2.1", "127.0.3.1"} { // three networks
		out = append(out, startTraffic(clientFrom(ip), 1, 40*time.Millisecond, func(i int) *http.Request {
			path := "/api/test"
			if i%10 == 0 {
				path = "/api/checkout"
			}
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			return req
		}))
	}
	return out
}

// greenCookie asks prod as a new client until the weights give it green,
// and returns the affinity cookie vipswap issued for green.
func greenCookie(t *testing.T, hc *http.Client, base string) string {
	t.Helper()
	for range 1000 {
		a := get(t, hc, base+"/api/test", "", nil)
		if a.cookieSlot == "green" {
			return a.cookie
		}
	}
	t.Fatal("1000 new clients and none was sent to green")
	return ""
}

// rolloutToEnd starts a rollout to green with steps and interval, waits
// until it is over (promoted or aborted) and returns the newest history
// entry.
func rolloutToEnd(t *testing.T, sw *switchtest.Switch, steps, interval string) wire.HistoryEntry {
	t.Helper()
	if code, out := cli(t, sw, "rollout", "start", "--to", "green", "--steps", steps, "--interval", interval); code != 0 {
		t.Fatalf("rollout start: exit %d: %s", code, out)
	}
	vstest.WaitFor(t, 90*time.Second, func() error {
		if st := rolloutStatus(t, sw); st.Running {
			return fmt.Errorf("rollout at step %d, weights %v", st.Step, st.Weights)
		}
		return nil
	})
	h, err := sw.Client.History(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return h[0]
}

// TestFloodCannotPromoteABrokenCanary: the canary fails every checkout;
// real users from three networks alone get the rollout aborted. One more
// client, from a network of its own, sending many cheap good requests
// that reach the canary (with a cookie it made up, with one vipswap
// issued, pinned, from many addresses of its network, or good answers to
// the very path judged on its own) must not dilute the verdict into a
// promotion: the rollout is still aborted, and pinned requests are counted
// apart as steered.
func TestFloodCannotPromoteABrokenCanary(t *testing.T) {
	blue := startApps(t, "blue", 2)
	green := startApps(t, "green", 2, "--fail-path", "/api/checkout")
	const plan = "20,50,100"
	for _, attack := range []string{"none", "forged cookie", "issued cookie", "pin", "many addresses", "the judged path"} {
		t.Run(attack, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir, staticSlots(map[string][]string{"blue": blue, "green": green})) + fastAnalysis
			target := "/api/test"
			if attack == "the judged path" {
				// Answered 400 by the app (a bad delay): not an error, and
				// under the path the analysis judges on its own.
				cfg += "  paths: [/api/checkout]\n"
				target = "/api/checkout?delay=x"
			}
			cfg += "affinity:\n  cookie: vipswap_slot\n  pin_header: X-Vipswap-Slot\n"
			sw := switchtest.Serve(t, dir, cfg)
			sw.WaitHealthy(t)
			attacker := clientFrom("127.0.9.1")
			header := map[string]string{}
			switch attack {
			case "forged cookie":
				header["Cookie"] = "vipswap_slot=green"
			case "issued cookie", "many addresses", "the judged path":
				// A cookie vipswap issued for green, while a shift gave
				// green a share: it holds whenever green takes traffic.
				shiftTo(t, sw, "green", 20)
				header["Cookie"] = "vipswap_slot=" + greenCookie(t, attacker, sw.Prod)
				shiftTo(t, sw, "green", 0)
			case "pin":
				header["X-Vipswap-Slot"] = "green"
			}
			// The flood runs first, so it is there from the canary's
			// first request on.
			var floods []*traffic
			if attack != "none" {
				ips := []string{"127.0.9.1"}
				if attack == "many addresses" {
					ips = nil
					for i := range 8 {
						ips = append(ips, fmt.Sprintf("127.0.9.%d", 10+i))
					}
				}
				for _, ip := range ips {
					f := startTraffic(clientFrom(ip), 8/len(ips), 0, func(int) *http.Request {
						req, _ := http.NewRequest(http.MethodGet, sw.Prod+target, nil)
						for k, v := range header {
							req.Header.Set(k, v)
						}
						return req
					})
					defer f.stop()
					floods = append(floods, f)
				}
				vstest.WaitFor(t, 30*time.Second, func() error { return expect(floods[0].sent.Load() > 200/int64(len(ips))) })
			}
			users := realUsers(sw.Prod)
			defer func() {
				for _, u := range users {
					u.stop()
				}
			}()
			e := rolloutToEnd(t, sw, plan, "3s")
			if st, _ := sw.Client.Status(context.Background()); st.Active != "blue" || e.Operation != "abort" || e.Actor != "rollout" {
				t.Fatalf("active %s, newest history %s by %s %v; want the broken canary rolled back", st.Active, e.Operation, e.Actor, e.Changes)
			}
			attacked := int64(0)
			for _, f := range floods {
				f.stop()
				attacked += f.sent.Load()
			}
			t.Logf("rolled back with %d attacking requests: %s", attacked, strings.Join(e.Changes, "; "))
			if attack == "pin" {
				m := scrape(t, sw.Admin)
				if n, _ := metric(m, "vipswap_steered_requests_total", map[string]string{"listener": "prod", "slot": "green"}); n < float64(attacked)/2 {
					t.Fatalf("vipswap_steered_requests_total{prod,green} is %v after %d pinned requests", n, attacked)
				}
			}
		})
	}
}

// TestSlowClientsDoNotAbortAHealthyCanary: clients that send their bodies
// one byte at a time, or read their answers slowly, through the canary,
// do not move the latency the analysis judges: a healthy canary under a
// p99 bound is promoted.
func TestSlowClientsDoNotAbortAHealthyCanary(t *testing.T) {
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 2), "green": startApps(t, "green", 2)}
	// A p99 bound the canary's own answers keep on a busy machine too,
	// and that a slow upload (4 s) or download (over 6 s) would breach
	// were its client's time counted.
	cfg := testConfig(dir, staticSlots(addrs)) + fastAnalysis + "  max_p99: 2s\naffinity:\n  cookie: vipswap_slot\n"
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	users := startTraffic(clientFrom("127.0.1.1"), 4, 0, func(int) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, sw.Prod+"/api/test", nil)
		return req
	})
	defer users.stop()
	shiftTo(t, sw, "green", 20) // for a cookie vipswap issued for green
	cookie := greenCookie(t, clientFrom("127.0.9.1"), sw.Prod)
	shiftTo(t, sw, "green", 0)
	addr := strings.TrimPrefix(sw.Prod, "http://")
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var slow, slowReads atomic.Int64
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.9.1")}}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil
		}
		go func() { <-ctx.Done(); c.Close() }()
		return c
	}
	for range 4 { // uploads: a 10-byte body, one byte every 400 ms
		wg.Go(func() {
			for ctx.Err() == nil {
				c := dial()
				if c == nil {
					return
				}
				fmt.Fprintf(c, "POST /api/test HTTP/1.1\r\nHost: x\r\nCookie: vipswap_slot=%s\r\nContent-Length: 10\r\n\r\n", cookie)
				tick := time.NewTicker(400 * time.Millisecond)
				for i := 0; i < 10 && ctx.Err() == nil; i++ {
					<-tick.C
					c.Write([]byte("x"))
				}
				tick.Stop()
				if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
					io.Copy(io.Discard, resp.Body)
					if resp.StatusCode == 200 {
						slow.Add(1)
					}
				}
				c.Close()
			}
		})
	}
	for range 2 { // downloads: 4 MiB read 32 KiB every 50 ms
		wg.Go(func() {
			for ctx.Err() == nil {
				c := dial()
				if c == nil {
					return
				}
				c.(*net.TCPConn).SetReadBuffer(32 << 10)
				fmt.Fprintf(c, "GET /api/test?size=4194304 HTTP/1.1\r\nHost: x\r\nCookie: vipswap_slot=%s\r\nConnection: close\r\n\r\n", cookie)
				buf := make([]byte, 32<<10)
				tick := time.NewTicker(50 * time.Millisecond)
				for ctx.Err() == nil {
					<-tick.C
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				tick.Stop()
				c.Close()
				slowReads.Add(1)
			}
		})
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	e := rolloutToEnd(t, sw, "20,50,100", "3s")
	if st, _ := sw.Client.Status(context.Background()); st.Active != "green" {
		t.Fatalf("active is %s; newest history %s by %s: %v; want the healthy canary promoted", st.Active, e.Operation, e.Actor, e.Changes)
	}
	t.Logf("promoted beside %d slow uploads and %d slow downloads", slow.Load(), slowReads.Load())
	if slow.Load() < 4 {
		t.Fatalf("%d slow uploads answered while the rollout ran, want at least 4", slow.Load())
	}
	m := scrape(t, sw.Admin)
	if n, _ := metric(m, "vipswap_request_duration_seconds", map[string]string{"listener": "prod", "slot": "green"}); n == 0 {
		t.Fatal("no client-facing duration counted for green")
	}
}

// TestAnalysisJudgesPaths: a canary that fails one path, 1 in 100 of the
// requests, is judged on that path alone (an overall minimum it does not
// reach first): the rollout is aborted on the path's own error rate.
func TestAnalysisJudgesPaths(t *testing.T) {
	dir := t.TempDir()
	addrs := map[string][]string{"blue": startApps(t, "blue", 2), "green": startApps(t, "green", 2, "--fail-path", "/api/checkout")}
	// A minimum the overall rate never reaches first: the path alone
	// decides (one failing checkout in a few dozen requests would breach
	// 1 % overall too, by chance).
	cfg := testConfig(dir, staticSlots(addrs)) + "analysis:\n  window: 2s\n  min_requests: 5000\n  max_error_rate: 0.01\n  paths: [/api/checkout]\n"
	sw := switchtest.Serve(t, dir, cfg)
	sw.WaitHealthy(t)
	users := startTraffic(clientFrom("127.0.1.1"), 4, 0, func(i int) *http.Request {
		path := "/api/test"
		if i%100 == 0 {
			path = "/api/checkout"
		}
		req, _ := http.NewRequest(http.MethodGet, sw.Prod+path, nil)
		return req
	})
	defer users.stop()
	e := rolloutToEnd(t, sw, "50,100", "5s")
	if e.Operation != "abort" || !strings.Contains(strings.Join(e.Changes, " "), "error rate on /api/checkout") {
		t.Fatalf("newest history %s by %s: %v; want an abort on /api/checkout's error rate", e.Operation, e.Actor, e.Changes)
	}
	t.Logf("aborted: %s", strings.Join(e.Changes, "; "))
}

// TestClientMistakesAreNotFailures: bad pins (unknown, empty, repeated)
// around a swap are answered 400 and counted as client errors in the
// swap's measurement, status and metrics, never as failed.
func TestClientMistakesAreNotFailures(t *testing.T) {
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+"affinity:\n  pin_header: X-Vipswap-Slot\nmeasure:\n  before: 60s\n  after: 1s\n")
	sw.WaitHealthy(t)
	hc := &http.Client{}
	bad := func(n int) {
		for i := range n {
			req, _ := http.NewRequest(http.MethodGet, sw.Prod+"/api/test", nil)
			switch i % 3 {
			case 0:
				req.Header.Set("X-Vipswap-Slot", "purple")
			case 1:
				req.Header["X-Vipswap-Slot"] = []string{""}
			case 2:
				req.Header["X-Vipswap-Slot"] = []string{"", "green"}
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Fatalf("bad pin %v: %d, want 400", req.Header["X-Vipswap-Slot"], resp.StatusCode)
			}
		}
	}
	bad(50)
	res, err := sw.Client.Swap(context.Background(), wire.ChangeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var e wire.HistoryEntry
	vstest.WaitFor(t, 30*time.Second, func() error {
		e, err = sw.Client.Entry(context.Background(), res.HistoryID)
		if err != nil {
			return err
		}
		return expect(e.Measurement != nil)
	})
	m := e.Measurement
	if m.Failed != 0 || m.ClientErrors != 50 || m.Listeners["prod"].ClientErrors != 50 {
		t.Fatalf("swap measured %d failed, %d client errors; want 0 and the 50 bad pins", m.Failed, m.ClientErrors)
	}
	st, _ := sw.Client.Status(context.Background())
	if st.Listeners[0].Failed != 0 || st.Listeners[0].ClientErrors != 50 {
		t.Fatalf("status: prod %d failed, %d client errors; want 0 and 50", st.Listeners[0].Failed, st.Listeners[0].ClientErrors)
	}
	mf := scrape(t, sw.Admin)
	if n, _ := metric(mf, "vipswap_failed_requests_total", map[string]string{"listener": "prod"}); n != 0 {
		t.Fatalf("vipswap_failed_requests_total{prod} is %v, want 0", n)
	}
	if code, out := cli(t, sw, "history", "--limit", "1"); code != 0 || !strings.Contains(out, "0 failed") || !strings.Contains(out, "50 client errors") {
		t.Fatalf("history: exit %d:\n%s\nwant 0 failed and 50 client errors", code, out)
	}
}

func expect(ok bool) error {
	if !ok {
		return fmt.Errorf("not yet")
	}
	return nil
}

// TestHarvestedCookieDiesWithItsSplit: an affinity cookie vipswap issued
// for green during one shift holds while that split lasts; once prod was
// back on one slot, a new split draws a new key and the old cookie is a
// made-up one: the client is drawn by weight and given a new cookie.
func TestHarvestedCookieDiesWithItsSplit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, addrs := startStatic(t, 1)
	sw := switchtest.Serve(t, dir, testConfig(dir, staticSlots(addrs))+"affinity:\n  cookie: vipswap_slot\n")
	sw.WaitHealthy(t)
	hc := &http.Client{}
	shiftTo(t, sw, "green", 10)
	old := greenCookie(t, hc, sw.Prod)
	shiftTo(t, sw, "green", 30) // the same split goes on: the cookie holds
	if a := get(t, hc, sw.Prod+"/api/test", old, nil); a.slot != "green" || a.cookie != "" {
		t.Fatalf("within its split the cookie reached %s (new cookie %q)", a.slot, a.cookie)
	}
	shiftTo(t, sw, "green", 0)
	shiftTo(t, sw, "green", 10)
	green := 0
	for range 100 {
		a := get(t, hc, sw.Prod+"/api/test", old, nil)
		if a.cookie == "" || a.cookie == old {
			t.Fatalf("an old split's cookie was honoured: slot %s, new cookie %q", a.slot, a.cookie)
		}
		if a.slot == "green" {
			green++
		}
	}
	if green > 30 {
		t.Fatalf("%d of 100 requests with an old split's green cookie reached green, want about 10 (by weight)", green)
	}
}
