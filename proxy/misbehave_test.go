package proxy

import (
	"bufio"
	"errors"
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
	"github.com/vipswap/vipswap/route"
)

// smuggled is a whole response a broken instance sends after its real
// answer. If vipswap reused the connection, the next request would read it
// as its own answer: another client's answer.
const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG"

// scripted is an instance that answers every request with the request's
// own id (its ?id= query) and misbehaves on the paths that ask for it:
//
//	/204body   a 204 followed by a smuggled response, in one write
//	/304body   the same with a 304
//	/204late   a 204, then a smuggled response in a second write 300µs later
//	/304late   the same with a 304
//	/extra     the id with a Content-Length, then a smuggled response
//	HEAD       a head announcing a body, then the body and a smuggled response
//	/unread    answers a POST without reading its body, which the client made
//	           a request of its own: the instance then reads and answers it
//	           (a client-driven smuggled answer)
//
// With late408 set, a connection idle for 1 ms after a request gets an
// unsolicited 408 and is closed, as servers with a short keep-alive timeout
// do.
type scripted struct {
	addr    string
	late408 bool
	served  atomic.Int64
}

func newScripted(t *testing.T, late408 bool) *scripted {
	t.Helper()
	s := &scripted{late408: late408}
	s.addr = vstest.Serve(t, s.serve)
	return s
}

func (s *scripted) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		if s.late408 && n > 0 {
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := br.Peek(1); err != nil {
				io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
				return
			}
			c.SetReadDeadline(time.Time{})
		}
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if r.URL.Path != "/unread" {
			io.Copy(io.Discard, r.Body)
		}
		s.served.Add(1)
		id := r.URL.Query().Get("id")
		var answer string
		switch {
		case r.URL.Path == "/204late", r.URL.Path == "/304late":
			io.WriteString(c, "HTTP/1.1 "+r.URL.Path[1:4]+" Whatever\r\n\r\n")
			time.Sleep(300 * time.Microsecond) // the instance's own pace
			answer = smuggled
		case r.Method == http.MethodHead:
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s", len(id), id, smuggled)
		case r.URL.Path == "/204body":
			answer = "HTTP/1.1 204 No Content\r\n\r\n" + smuggled
		case r.URL.Path == "/304body":
			answer = "HTTP/1.1 304 Not Modified\r\n\r\n" + smuggled
		case r.URL.Path == "/extra":
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s", len(id), id, smuggled)
		default:
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(id), id)
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
	}
}

// TestNoAnswerReachesTheWrongRequest (issue 9, point 1): instances that send
// bytes beyond their answers, under concurrent load. Every answer must be
// the request's own.
func TestNoAnswerReachesTheWrongRequest(t *testing.T) {
	cases := []struct {
		name, method, path string
		wantStatus         int
		late408            bool
	}{
		{"a body on a 204", "GET", "/204body", 204, false},
		{"a body on a 304", "GET", "/304body", 304, false},
		{"a body on a 204, in a later write", "GET", "/204late", 204, false},
		{"a body on a 304, in a later write", "GET", "/304late", 304, false},
		{"a request body the instance did not read", "POST", "/unread", 200, false},
		{"a body on a HEAD answer", "HEAD", "/head", 200, false},
		{"bytes past Content-Length", "GET", "/extra", 200, false},
		{"an unsolicited late 408", "GET", "/ok", 200, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := newScripted(t, tc.late408)
			inst := route.NewInstance("blue", in.addr)
			p := New(Options{})
			p.Apply(table(1, []*route.Instance{inst}, nil))
			prod, _ := serve(t, p)
			var next atomic.Int64
			var wrong, failed atomic.Int64
			var mu sync.Mutex
			var first []string
			note := func(counter *atomic.Int64, msg string) {
				counter.Add(1)
				mu.Lock()
				if len(first) < 5 {
					first = append(first, msg)
				}
				mu.Unlock()
			}
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
					defer client.CloseIdleConnections()
					for i := range 150 {
						id := fmt.Sprint(next.Add(1))
						method, path, want := "GET", "/ok", 200
						if i%3 == 0 { // every third request misbehaves
							method, path, want = tc.method, tc.path, tc.wantStatus
						}
						var payload io.Reader
						if method == "POST" {
							payload = strings.NewReader("GET /?id=SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n")
						}
						req, _ := http.NewRequest(method, prod+path+"?id="+id, payload)
						resp, err := client.Do(req)
						if err != nil {
							note(&failed, err.Error())
							continue
						}
						body, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						switch {
						case err != nil || resp.StatusCode != want:
							note(&failed, fmt.Sprintf("%s %s: %d %q %v", method, path, resp.StatusCode, body, err))
						case want == 200 && method != "HEAD" && string(body) != id:
							note(&wrong, fmt.Sprintf("request %s got the answer %q", id, body))
						}
					}
				})
			}
			wg.Wait()
			if wrong.Load() != 0 || failed.Load() != 0 {
				t.Fatalf("%d answers reached the wrong request, %d requests failed, of %d; first: %q",
					wrong.Load(), failed.Load(), next.Load(), first)
			}
		})
	}

	// A bad answer on stage must not poison prod after a swap: pools are per
	// instance, and the instance moves from stage to prod.
	t.Run("stage's bad answer does not reach prod after a swap", func(t *testing.T) {
		in := newScripted(t, false)
		green := route.NewInstance("green", in.addr)
		p := New(Options{})
		p.Apply(table(1, nil, []*route.Instance{green}))
		prod, stage := serve(t, p)
		if code, body := get(t, stage+"/extra?id=s1"); code != 200 || body != "s1" {
			t.Fatalf("stage answered %d %q", code, body)
		}
		p.Apply(table(2, []*route.Instance{green}, nil)) // the swap
		if code, body := get(t, prod+"/ok?id=p1"); code != 200 || body != "p1" {
			t.Fatalf("prod answered %d %q, want 200 p1", code, body)
		}
	})
}

// rawAnswerer is an instance that reads each request and lets answer write
// whatever it likes on the connection; answer returns false to close it.
func rawAnswerer(t *testing.T, answer func(c net.Conn, r *http.Request) bool) *route.Instance {
	t.Helper()
	return route.NewInstance("blue", vstest.Serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			if !answer(c, r) {
				return
			}
		}
	}))
}

// waitReusable waits until inst has a pooled connection the next request
// may take (idle for reuseQuiet).
func waitReusable(t *testing.T, p *Proxy, inst *route.Instance) {
	t.Helper()
	vstest.WaitFor(t, 5*time.Second, func() error {
		pl := p.poolFor(inst, nil)
		pl.mu.Lock()
		defer pl.mu.Unlock()
		if len(pl.idle) == 0 || time.Since(pl.idle[0].idleSince) < reuseQuiet {
			return errors.New("no connection ready for reuse yet")
		}
		return nil
	})
}

// proxyOf serves a proxy whose prod slot is insts.
func proxyOf(t *testing.T, opts Options, insts ...*route.Instance) (string, *Proxy) {
	t.Helper()
	p := New(opts)
	p.Apply(table(1, insts, nil))
	prod, _ := serve(t, p)
	return prod, p
}

// TestInstanceAnswersAreBounded (issue 9, point 3): an oversized response
// head is never forwarded; the client gets a 502 and vipswap stops reading.
func TestInstanceAnswersAreBounded(t *testing.T) {
	t.Run("a head of 100 MB", func(t *testing.T) {
		var wrote atomic.Int64
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
			io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			for wrote.Load() < 100<<20 {
				n, err := io.WriteString(c, line)
				wrote.Add(int64(n))
				if err != nil {
					break
				}
			}
			return false
		})
		prod, p := proxyOf(t, Options{}, inst)
		code, body := get(t, prod)
		if code != 502 || !strings.Contains(body, `slot "blue" answered with an invalid response`) {
			t.Fatalf("got %d %q, want a 502 naming the slot", code, body)
		}
		if n := wrote.Load(); n >= 100<<20 {
			t.Fatalf("vipswap read all %d bytes of the head", n)
		}
		if p.Failed(route.Prod) != 1 {
			t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
		}
	})
	t.Run("too many fields", func(t *testing.T) {
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			var b strings.Builder
			b.WriteString("HTTP/1.1 200 OK\r\n")
			for i := range 150 {
				fmt.Fprintf(&b, "X-F%d: v\r\n", i)
			}
			b.WriteString("Content-Length: 2\r\n\r\nok")
			io.WriteString(c, b.String())
			return true
		})
		prod, _ := proxyOf(t, Options{}, inst)
		if code, _ := get(t, prod); code != 502 {
			t.Fatalf("got %d, want 502", code)
		}
	})
	t.Run("limits are configurable", func(t *testing.T) {
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("b", 2000)+"\r\nContent-Length: 2\r\n\r\nok")
			return true
		})
		prod, _ := proxyOf(t, Options{MaxHeaderBytes: 1024}, inst)
		if code, _ := get(t, prod); code != 502 {
			t.Fatalf("got %d, want 502 with a 1 KiB limit", code)
		}
	})
}

// TestUpgradesOnlyWhenAsked (issue 9, point 5).
func TestUpgradesOnlyWhenAsked(t *testing.T) {
	t.Run("101 to a request that did not ask", func(t *testing.T) {
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nraw bytes")
			return false
		})
		prod, _ := proxyOf(t, Options{}, inst)
		if code, body := get(t, prod); code != 502 || strings.Contains(body, "raw bytes") {
			t.Fatalf("got %d %q, want 502", code, body)
		}
	})
	t.Run("101 to another protocol than asked", func(t *testing.T) {
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
			return false
		})
		prod, _ := proxyOf(t, Options{}, inst)
		status, _ := raw(t, prod, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		if status != "502 Bad Gateway" {
			t.Fatalf("got %s, want 502", status)
		}
	})
	t.Run("h2c is not forwarded", func(t *testing.T) {
		ri := newRawInstance(t)
		prod, _ := proxyOf(t, Options{}, route.NewInstance("blue", ri.addr))
		status, _ := raw(t, prod, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
		head := <-ri.heads
		if status != "200 OK" || strings.Contains(strings.ToLower(head), "upgrade") || strings.Contains(strings.ToLower(head), "http2-settings") {
			t.Fatalf("got %s; the instance received:\n%s", status, head)
		}
	})
}

// TestBlameTheRightParty (issue 9, point 6).
func TestBlameTheRightParty(t *testing.T) {
	t.Run("a client's aborted body is a 400, not counted", func(t *testing.T) {
		prod, in, p := proxyTo(t, echo)
		c, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
		c.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 400 || strings.Contains(string(body), in.inst.Addr) {
			t.Fatalf("got %d %q, want 400 not naming the instance", resp.StatusCode, body)
		}
		if p.Failed(route.Prod) != 0 {
			t.Fatalf("failed = %d, want 0: the client's fault", p.Failed(route.Prod))
		}
	})
	t.Run("a malformed chunked body is a 400, not counted", func(t *testing.T) {
		prod, _, p := proxyTo(t, echo)
		status, _ := raw(t, prod, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
		if status != "400 Bad Request" || p.Failed(route.Prod) != 0 {
			t.Fatalf("got %s with %d failed, want 400 and 0", status, p.Failed(route.Prod))
		}
	})
	invalid := []struct{ name, answer string }{
		{"a malformed status line", "HTTP/1.1 abc\r\n\r\n"},
		{"a truncated head", "HTTP/1.1 200 OK\r\nContent-Le"},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk"},
		{"an unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx"},
	}
	for _, tc := range invalid {
		t.Run(tc.name+" is an immediate 502", func(t *testing.T) {
			inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
				io.WriteString(c, tc.answer)
				return false
			})
			// Had it held, it would outlast the client's deadline.
			prod, p := proxyOf(t, Options{Hold: time.Hour}, inst)
			code, body := getWithin(t, prod, 30*time.Second)
			if code != 502 || !strings.Contains(body, `slot "blue"`) || strings.Contains(body, inst.Addr) {
				t.Fatalf("got %d %q, want a 502 naming the slot only", code, body)
			}
			if p.Failed(route.Prod) != 1 {
				t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
			}
		})
	}
	t.Run("a body cut off before any byte was sent is a 502", func(t *testing.T) {
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
			return false
		})
		prod, p := proxyOf(t, Options{}, inst)
		if code, _ := get(t, prod); code != 502 {
			t.Fatalf("got %d, want 502", code)
		}
		if p.Failed(route.Prod) != 1 {
			t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
		}
	})
	t.Run("a body with a Content-Length is streamed as it arrives", func(t *testing.T) {
		release := make(chan struct{})
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
			<-release
			io.WriteString(c, "world")
			return true
		})
		prod, _ := proxyOf(t, Options{}, inst)
		resp, err := http.Get(prod)
		if err != nil {
			close(release)
			t.Fatal(err)
		}
		defer resp.Body.Close()
		first := make([]byte, 5)
		got := make(chan error, 1)
		go func() { _, err := io.ReadFull(resp.Body, first); got <- err }()
		select {
		case err := <-got:
			if err != nil || string(first) != "hello" {
				t.Errorf("first piece %q, %v", first, err)
			}
		case <-time.After(time.Minute): // only ends a hung test
			t.Error("the first piece did not arrive before the rest was sent")
		}
		close(release)
		if rest, _ := io.ReadAll(resp.Body); string(rest) != "world" {
			t.Fatalf("rest %q", rest)
		}
	})
}

// TestRepeatsOnlyWhatIsSafe: a 408 on a reused connection sends a request
// again only when that is safe; a POST gets the 408 (it may have been
// acted on).
func TestRepeatsOnlyWhatIsSafe(t *testing.T) {
	var hits atomic.Int64
	inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		n := hits.Add(1)
		if n == 1 {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return true
		}
		io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		return false
	})
	// The POST takes the pooled connection however long the test takes
	// to send it (unsafeReuseWithin).
	prod, p := proxyOf(t, Options{unsafeReuseWithin: time.Hour}, inst)
	if code, _ := get(t, prod); code != 200 {
		t.Fatalf("warm-up: %d", code)
	}
	waitReusable(t, p, inst)
	resp, err := http.Post(prod, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 408 || hits.Load() != 2 {
		t.Fatalf("got %d after %d requests at the instance, want the 408 after 2", resp.StatusCode, hits.Load())
	}
}

// TestAnswersThatAreNotQuiteBroken covers what an instance may do that is
// legal but unusual, and its client must get right.
func TestAnswersThatAreNotQuiteBroken(t *testing.T) {
	t.Run("an answer before the whole body was read is passed on", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			http.ReadRequest(br) // the head only: the body is too large
			io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 8\r\n\r\ntoo big\n")
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			io.Copy(io.Discard, c) // keep reading a while so the answer is not reset away
			c.Close()
		}()
		prod, p := proxyOf(t, Options{}, route.NewInstance("blue", ln.Addr().String()))
		req, _ := http.NewRequest("POST", prod, io.LimitReader(zeros{}, 64<<20))
		req.ContentLength = 64 << 20
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || string(body) != "too big\n" {
			t.Fatalf("got %d %q, want the instance's 413", resp.StatusCode, body)
		}
		if p.Failed(route.Prod) != 0 {
			t.Fatalf("failed = %d, want 0", p.Failed(route.Prod))
		}
	})
	t.Run("a request the instance crashes on is an immediate 502", func(t *testing.T) {
		crash := func(c net.Conn, r *http.Request) bool { return false } // close, no answer
		// A request that held for an instance would outlast the
		// client's deadline.
		prod, _ := proxyOf(t, Options{Hold: time.Hour}, rawAnswerer(t, crash), rawAnswerer(t, crash))
		code, body := getWithin(t, prod, 30*time.Second)
		if code != 502 {
			t.Fatalf("got %d %q, want an immediate 502", code, body)
		}
	})
	t.Run("with Expect: 100-continue, a broken answer is still a 502", func(t *testing.T) {
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n") // and no body
			return false
		})
		prod, _ := proxyOf(t, Options{}, inst)
		status, _ := raw(t, prod, "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
		if status != "502 Bad Gateway" {
			t.Fatalf("got %s, want 502", status)
		}
	})
	t.Run("a 408 for a stalled body closes at once", func(t *testing.T) {
		in := newInstance(t, "blue", "i", echo)
		prod, _ := proxyOf(t, Options{ClientReadTimeout: 200 * time.Millisecond, ReadHeaderTimeout: time.Hour}, in.inst)
		c, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second)) // long before read_header_timeout (1h)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
		all, err := io.ReadAll(c) // until the close
		if !strings.HasPrefix(string(all), "HTTP/1.1 408") || err != nil {
			t.Fatalf("got %q (%v); want a 408 and a close well before read_header_timeout", all, err)
		}
	})
	t.Run("a half-closed tunnel still carries the other way", func(t *testing.T) {
		in := newInstance(t, "blue", "ws", func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := switchToEcho(w)
			if err != nil {
				return
			}
			defer conn.Close()
			got, _ := io.ReadAll(brw) // until the client's half-close
			brw.WriteString("you said: " + string(got))
			brw.Flush()
		})
		prod, _ := proxyOf(t, Options{}, in.inst)
		c, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(c)
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		io.WriteString(c, "bye")
		c.(*net.TCPConn).CloseWrite()
		rest, _ := io.ReadAll(br)
		if string(rest) != "you said: bye" {
			t.Fatalf("after the half-close the client got %q", rest)
		}
	})
}

// TestPooledConnectionClosedUnderARequestWithoutBody: an instance that
// answers as if keeping the connection and then closes it. A POST without
// a body (not safe to repeat once sent) that takes such a pooled
// connection finds it dead before sending a byte, and goes out on a new
// one: every request gets the instance's answer.
func TestPooledConnectionClosedUnderARequestWithoutBody(t *testing.T) {
	var answered atomic.Int64
	closed := make(chan struct{}, 1)
	inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		answered.Add(1)
		c.Close() // the connection it let the proxy keep
		closed <- struct{}{}
		return false
	})
	prod, p := proxyOf(t, Options{}, inst)
	client := &http.Client{}
	for i := range 40 {
		if i > 0 {
			// The instance has closed the pooled connection before the
			// next request takes it. (A close racing the request's write
			// is another case: no proxy can tell whether the instance
			// read a POST it then dropped, so it is not repeated.)
			select {
			case <-closed:
			case <-time.After(30 * time.Second):
				t.Fatalf("request %d: the instance did not close its connection", i)
			}
		}
		resp, err := client.Post(prod, "text/plain", nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q, want the instance's 200", i, resp.StatusCode, body)
		}
	}
	if f := p.Failed(route.Prod); f != 0 {
		t.Fatalf("failed = %d, want 0", f)
	}
	t.Logf("%d answers from the instance for 40 requests", answered.Load())
}
