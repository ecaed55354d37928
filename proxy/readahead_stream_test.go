package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// TestAChunkEndingAtTheBufferIsNotHeldBack: an instance sends a burst of
// chunks, each whole with its CRLF, then pauses (a streamed answer's
// events). The burst is laid out so that the connection's buffer fills at
// the end of a chunk's data and only that chunk's CRLF is left, read ahead
// in the same system call (inside 0), or at its CR, its LF read ahead
// (inside 1): nothing the client could get by waiting. What arrived must
// reach the client during the pause, not once the instance sends more.
func TestAChunkEndingAtTheBufferIsNotHeldBack(t *testing.T) {
	for _, tc := range []struct {
		second, inside int
		h2c            bool
	}{{1, 0, false}, {100, 0, false}, {1000, 0, false}, {3000, 0, false}, {1, 1, false}, {1000, 1, false}, {1000, 0, true}, {1000, 1, true}} {
		second, inside := tc.second, tc.inside
		t.Run(fmt.Sprint(second, "/", inside, map[bool]string{false: "/http1.1", true: "/h2c"}[tc.h2c]), func(t *testing.T) {
			const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			// The head and a first chunk fill the first read exactly
			// (4 KiB); the first chunk's CRLF, a second chunk and a third
			// (and inside bytes of its CRLF) fill the next (4 KiB); the
			// rest of the third's CRLF is beyond.
			chunk := func(data int) string { return fmt.Sprintf("%x\r\n%s", data, strings.Repeat("d", data)) }
			size := func(data int) int { return len(chunk(data)) }
			fit := func(room int) int { // the data of a chunk that takes room bytes
				d := room - 3
				for size(d) > room {
					d--
				}
				if size(d) != room {
					t.Fatalf("no chunk takes %d bytes", room)
				}
				return d
			}
			first := fit(bufferSize - len(head))
			third := fit(bufferSize - 2 - size(second) - 2 - inside)
			burst := head + chunk(first) + "\r\n" + chunk(second) + "\r\n" + chunk(third) + "\r\n"
			if len(burst) != 2*bufferSize+2-inside {
				t.Fatalf("the burst is %d bytes, want %d", len(burst), 2*bufferSize+2-inside)
			}
			data := first + second + third
			release := make(chan struct{})
			inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
				if _, err := io.WriteString(c, burst); err != nil { // one segment: it arrives whole
					return false
				}
				<-release
				io.WriteString(c, "0\r\n\r\n")
				return true
			})
			var prod string
			get := http.Get
			if tc.h2c { // the client's copy goes through x/net's writer
				p := New(Options{})
				p.Apply(table(1, []*route.Instance{inst}, nil))
				var cl *http.Client
				prod, cl = serveH2(t, p, false)
				get = cl.Get
			} else {
				prod, _ = proxyOf(t, Options{}, inst)
			}
			resp, err := get(prod)
			if err != nil {
				close(release)
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got := make(chan error, 1)
			go func() {
				b := make([]byte, data)
				_, err := io.ReadFull(resp.Body, b)
				if err == nil && string(b) != strings.Repeat("d", data) {
					err = fmt.Errorf("the %d bytes sent differ", data)
				}
				got <- err
			}()
			select {
			case err := <-got:
				close(release)
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second): // not a bound on speed: held back, it never comes (the instance waits)
				close(release)
				t.Fatalf("the %d bytes of the burst were held back until the instance sent more", data)
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || len(rest) != 0 {
				t.Fatalf("after the burst: %q, %v; want the end", rest, err)
			}
		})
	}
}

// TestChunkedEndsAtEveryOffsetSmuggleNothing: chunked answers whose chunk
// boundaries, CRLFs, body end, trailer section and a whole answer the
// instance sends unasked with the end fall at every offset around the
// connection's 4 KiB buffer and the bytes read ahead beyond it: each
// client gets its own body and trailer whole, and the unasked answer
// reaches no one.
func TestChunkedEndsAtEveryOffsetSmuggleNothing(t *testing.T) {
	var lengths []int
	for l := bufferSize - 100; l <= bufferSize+100; l++ {
		lengths = append(lengths, l)
	}
	for l := 2*bufferSize - 100; l <= 2*bufferSize+100; l++ {
		lengths = append(lengths, l)
	}
	variants := []string{"plain", "smuggle", "trail", "trail+smuggle"}
	bodyOf := func(path string, l int) string { return strings.Repeat(path+"|", l/(len(path)+1)+1)[:l] }
	inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		var l, k int
		var variant string
		fmt.Sscanf(r.URL.Path, "/c%d/l%d/k%d/%s", new(int), &l, &k, &variant)
		body := bodyOf(r.URL.Path, l)
		var b strings.Builder
		fmt.Fprintf(&b, "HTTP/1.1 200 OK\r\nX-Path: %s\r\n", r.URL.Path)
		if strings.Contains(variant, "trail") {
			b.WriteString("Trailer: X-T\r\n")
		}
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		for rest := body; rest != ""; {
			n := min(k, len(rest))
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n")
		if strings.Contains(variant, "trail") {
			b.WriteString("X-T: " + r.URL.Path + "\r\n")
		}
		b.WriteString("\r\n")
		const unasked = "HTTP/1.1 200 OK\r\nX-Path: /smuggled\r\nContent-Length: 8\r\n\r\nSMUGGLED"
		if strings.Contains(variant, "smuggle") {
			b.WriteString(unasked)
		}
		_, err := io.WriteString(c, b.String())
		return err == nil
	})
	prod, _ := proxyOf(t, Options{}, inst)
	const clients = 2
	getEach(t, prod, clients, len(lengths)/clients, func(c, i int) string {
		l := lengths[i*clients+c]
		k := []int{l, 1000, 61}[l%3]
		return fmt.Sprintf("/c%d/l%d/k%d/%s", c, l, k, variants[(l/3)%len(variants)])
	}, func(path string, resp *http.Response, body []byte) error {
		var l int
		fmt.Sscanf(path, "/c%d/l%d/", new(int), &l)
		trailer := ""
		if strings.Contains(path, "trail") {
			trailer = path
		}
		if resp.Header.Get("X-Path") != path || string(body) != bodyOf(path, l) || resp.Trailer.Get("X-T") != trailer {
			return fmt.Errorf("asked for %s: the head of %q, a body of %d bytes starting %.30q, the trailer %q",
				path, resp.Header.Get("X-Path"), len(body), body, resp.Trailer.Get("X-T"))
		}
		return nil
	})
}

// TestAStalledChunkedBodyStillTimesOutAndCancels: reads of a chunked body
// go through the read that reads ahead; an instance that stalls mid-body,
// just after a read filled its buffer and read ahead, is still cut off by
// InstanceReadTimeout, and a client that goes away still ends the
// exchange with the instance.
func TestAStalledChunkedBodyStillTimesOutAndCancels(t *testing.T) {
	// A first chunk that fills the buffer and one read into the body's
	// buffer, then a size line and part of a second chunk (read ahead),
	// then nothing.
	// The caller closes release before the test's cleanups, which wait for
	// the instance's handlers.
	stalled := func(t *testing.T, release chan struct{}) *route.Instance {
		return rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n100\r\n%s",
				3*bufferSize, strings.Repeat("a", 3*bufferSize), strings.Repeat("b", 100))
			<-release
			return false
		})
	}
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		inst := stalled(t, release)
		prod, p := proxyOf(t, Options{InstanceReadTimeout: 200 * time.Millisecond}, inst)
		resp, err := http.Get(prod)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("a stalled body of %d bytes reached the client as if whole", len(body))
		}
		waitNothingInFlight(t, inst)
		if p.Failed(route.Prod) != 1 {
			t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
		}
	})
	t.Run("client gone", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		inst := stalled(t, release)
		prod, _ := proxyOf(t, Options{}, inst)
		resp, err := http.Get(prod)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 3*bufferSize)); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // the client goes away mid-body
		waitNothingInFlight(t, inst)
	})
}

// TestATunnelAfterAChunkedAnswerOnTheSameConnection: a connection that
// carried a chunked answer read with reads ahead (a chunk that filled the
// buffer, the end read ahead) goes back to the pool and carries an upgrade
// next: the tunnel passes the instance's bytes on in order, none lost to
// or taken from what was read ahead.
func TestATunnelAfterAChunkedAnswerOnTheSameConnection(t *testing.T) {
	long := strings.Repeat("x", 3*bufferSize)
	var conns atomic.Int64
	inst := route.NewInstance("blue", vstest.Serve(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if r.Header.Get("Upgrade") == "" {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(long), long)
				continue
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nfirst\n")
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				io.WriteString(c, "echo: "+line)
			}
		}
	}))
	prod, p := proxyOf(t, Options{}, inst)
	if code, body := get(t, prod); code != 200 || body != long {
		t.Fatalf("got %d and %d bytes, want 200 and %d", code, len(body), len(long))
	}
	waitReusable(t, p, inst)
	conn, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	for _, want := range []string{"first\n", "echo: one\n", "echo: two\n"} {
		if want != "first\n" {
			io.WriteString(conn, strings.TrimPrefix(want, "echo: "))
		}
		if line, err := br.ReadString('\n'); err != nil || line != want {
			t.Fatalf("through the tunnel: %q, %v; want %q", line, err, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections to the instance, want the pooled one reused", n)
	}
}
