package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// blackhole returns an address whose connections never complete: a
// listener with a full accept queue, so the kernel drops new handshakes.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue: until a dial times out.
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("could not fill the accept queue")
	return ""
}

// waitNothingInFlight waits until inst has no request in flight.
func waitNothingInFlight(t *testing.T, inst *route.Instance) {
	t.Helper()
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := inst.InFlight(route.Prod); n != 0 {
			return fmt.Errorf("%d requests in flight on %s", n, inst.Addr)
		}
		return nil
	})
}

// getWithin is get with a client deadline: a request that is not answered
// by then fails the test.
func getWithin(t *testing.T, url string, d time.Duration) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: d}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEveryWaitHasADeadline (issue 9, point 4): a hung or slow instance, or
// a slow client, holds a request only as long as its timeout.
func TestEveryWaitHasADeadline(t *testing.T) {
	short := 200 * time.Millisecond
	t.Run("connect", func(t *testing.T) {
		inst := route.NewInstance("blue", blackhole(t))
		prod, p := proxyOf(t, Options{ConnectTimeout: short, Hold: short}, inst)
		start := time.Now()
		code, body := get(t, prod)
		if code != 502 {
			t.Fatalf("got %d %q after %s, want a 502 once the hold ends", code, body, time.Since(start))
		}
		t.Logf("502 after %s (connect timeout and hold %s)", time.Since(start).Round(time.Millisecond), short)
		if p.Failed(route.Prod) != 1 {
			t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
		}
	})
	t.Run("response head", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			<-release // hung
			return false
		})
		prod, p := proxyOf(t, Options{ResponseHeaderTimeout: short}, inst)
		// The instance never answers: without the timeout the request
		// would wait past the client's own deadline.
		code, body := getWithin(t, prod, 30*time.Second)
		if code != 504 || !strings.Contains(body, `slot "blue" did not answer in time`) {
			t.Fatalf("got %d %q, want 504", code, body)
		}
		if p.Failed(route.Prod) != 1 {
			t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
		}
		waitNothingInFlight(t, inst)
	})
	t.Run("a POST that timed out is not retried", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		hits := make(chan struct{}, 10)
		hung := func(c net.Conn, r *http.Request) bool { hits <- struct{}{}; <-release; return false }
		a, b := rawAnswerer(t, hung), rawAnswerer(t, hung)
		prod, _ := proxyOf(t, Options{ResponseHeaderTimeout: short}, a, b)
		resp, err := http.Post(prod, "text/plain", strings.NewReader("pay once"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 504 || len(hits) != 1 {
			t.Fatalf("got %d after %d attempts, want 504 after 1", resp.StatusCode, len(hits))
		}
	})
	t.Run("instance body", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst ten.")
			<-release // stalls mid-body
			return false
		})
		prod, p := proxyOf(t, Options{InstanceReadTimeout: short}, inst)
		resp, err := http.Get(prod)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatal("a stalled body reached the client as if whole")
		}
		waitNothingInFlight(t, inst)
		if p.Failed(route.Prod) != 1 {
			t.Fatalf("failed = %d, want 1", p.Failed(route.Prod))
		}
	})
	t.Run("client body", func(t *testing.T) {
		in := newInstance(t, "blue", "i", echo)
		prod, p2 := proxyOf(t, Options{ClientReadTimeout: short}, in.inst)
		c, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b") // and then nothing
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 408 {
			t.Fatalf("got %d, want 408", resp.StatusCode)
		}
		waitNothingInFlight(t, in.inst)
		if p2.Failed(route.Prod) != 0 {
			t.Fatalf("failed = %d, want 0: the client's fault", p2.Failed(route.Prod))
		}
	})
	t.Run("instance write", func(t *testing.T) {
		// An instance that never reads: the request body fills the socket
		// buffers and the write blocks.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		done := make(chan struct{})
		defer close(done)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				defer c.Close()
				io.Copy(io.Discard, io.LimitReader(c, 1)) // one byte, then nothing
				<-done
			}
		}()
		inst := route.NewInstance("blue", ln.Addr().String())
		prod, _ := proxyOf(t, Options{InstanceWriteTimeout: short}, inst)
		req, _ := http.NewRequest("POST", prod, io.LimitReader(zeros{}, 256<<20))
		req.ContentLength = 256 << 20
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 504 {
				t.Fatalf("got %d, want 504", resp.StatusCode)
			}
		}
		waitNothingInFlight(t, inst)
	})
	t.Run("slow client", func(t *testing.T) {
		big := strings.Repeat("x", 64<<20)
		in := newInstance(t, "blue", "i", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })
		prod, p2 := proxyOf(t, Options{ClientWriteTimeout: short}, in.inst)
		c, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
		waitNothingInFlight(t, in.inst)
		if p2.Failed(route.Prod) != 0 {
			t.Fatalf("failed = %d, want 0: the client's fault", p2.Failed(route.Prod))
		}
	})
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
