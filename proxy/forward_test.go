package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// echo answers with what it received: method, URI, headers of interest, the
// body and the request trailer X-Sum.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s len=%d body=%s expect=%q te=%q xsum=%q",
		r.Method, r.RequestURI, r.ContentLength, body, r.Header.Get("Expect"), r.TransferEncoding, r.Trailer.Get("X-Sum"))
}

func proxyTo(t *testing.T, h http.HandlerFunc) (prod string, in *instance, p *Proxy) {
	in = newInstance(t, "blue", "i", h)
	p = New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	prod, _ = serve(t, p)
	return prod, in, p
}

// raw sends a raw HTTP/1.1 request on a new connection and returns the
// first response's status line and body.
func raw(t *testing.T, addr, request string) (string, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, request)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	for err == nil && resp.StatusCode < 200 {
		resp, err = http.ReadResponse(br, nil) // skip 100 Continue
	}
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", request, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.Status, string(b)
}

func TestRequestBodies(t *testing.T) {
	prod, _, _ := proxyTo(t, echo)
	cases := []struct{ name, request, want string }{
		{"content-length body", "POST /a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
			`POST /a?b=c len=5 body=hello expect="" te=[] xsum=""`},
		{"chunked body with a trailer", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n",
			`POST /c len=-1 body=abcde expect="" te=["chunked"] xsum="5"`},
		{"empty POST", "POST /e HTTP/1.1\r\nHost: x\r\n\r\n", `POST /e len=0 body= expect=""`},
		{"expect 100-continue is answered by vipswap", "PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
			`PUT /u len=2 body=ok expect=""`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := raw(t, prod, c.request)
			if status != "200 OK" || !strings.HasPrefix(body, c.want) {
				t.Fatalf("got %s %q, want 200 and %q", status, body, c.want)
			}
		})
	}
}

// rawInstance records the exact bytes of each request head it receives and
// answers "ok". It understands only the framing vipswap writes.
type rawInstance struct {
	addr  string
	heads chan string
}

func newRawInstance(t *testing.T) *rawInstance {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ri := &rawInstance{addr: ln.Addr().String(), heads: make(chan string, 100)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go ri.serve(c)
		}
	}()
	return ri
}

func (ri *rawInstance) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		h := head.String()
		ri.heads <- h
		if strings.Contains(h, "Transfer-Encoding: chunked") {
			for {
				line, err := br.ReadString('\n')
				if err != nil || line == "0\r\n" {
					br.ReadString('\n')
					break
				}
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

// TestSmuggling: ambiguous requests are refused, or normalised so that the
// instance receives exactly the requests vipswap parsed, each framed one
// way only. vipswap never forwards a client's framing: it writes its own.
func TestSmuggling(t *testing.T) {
	ri := newRawInstance(t)
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{route.NewInstance("blue", ri.addr)}, nil))
	prod, _ := serve(t, p)
	// The instance records a head before it answers, and vipswap answers the
	// client after the instance: once raw returns, every head forwarded for
	// that request is in the channel.
	heads := func() []string {
		var out []string
		for {
			select {
			case h := <-ri.heads:
				out = append(out, h)
			default:
				return out
			}
		}
	}

	refused := []struct{ name, request string }{
		{"two different content-lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"obfuscated transfer-encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"two transfer-encodings", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"},
		{"space before colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			status, _ := raw(t, prod, c.request)
			if !strings.HasPrefix(status, "4") && !strings.HasPrefix(status, "501") {
				t.Fatalf("got %s, want the request refused (4xx, or 501 for a transfer coding)", status)
			}
			if got := heads(); len(got) != 0 {
				t.Fatalf("the instance received %q, want nothing", got)
			}
		})
	}

	t.Run("content-length and transfer-encoding: chunked wins, length dropped", func(t *testing.T) {
		status, _ := raw(t, prod, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		got := heads()
		if status != "200 OK" || len(got) != 1 {
			t.Fatalf("got %s and %d forwarded requests, want 200 and 1", status, len(got))
		}
		if strings.Contains(got[0], "Content-Length") || !strings.Contains(got[0], "Transfer-Encoding: chunked") {
			t.Fatalf("forwarded head is ambiguous:\n%s", got[0])
		}
	})
	t.Run("obs-fold is unfolded", func(t *testing.T) {
		status, _ := raw(t, prod, "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")
		got := heads()
		if status != "200 OK" || len(got) != 1 {
			t.Fatalf("got %s and %d forwarded requests", status, len(got))
		}
		for _, line := range strings.Split(got[0], "\r\n") {
			if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
				t.Fatalf("forwarded head still folds a line:\n%s", got[0])
			}
		}
		if !strings.Contains(got[0], "X-A: a b\r\n") {
			t.Fatalf("folded value not joined:\n%s", got[0])
		}
	})
}

func TestResponseShapes(t *testing.T) {
	prod, _, _ := proxyTo(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailer":
			w.Header().Set("Trailer", "X-Checksum")
			io.WriteString(w, "data")
			w.Header().Set("X-Checksum", "abc")
		case "/nocontenttype":
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<html>not sniffed</html>")
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/early":
			w.Header().Set("Link", "</s.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "final")
		case "/nobody":
			w.WriteHeader(http.StatusNoContent)
		}
	})
	t.Run("trailers pass through", func(t *testing.T) {
		resp, err := http.Get(prod + "/trailer")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
			t.Fatalf("trailer X-Checksum = %q, want abc", got)
		}
	})
	t.Run("no content-type is not sniffed", func(t *testing.T) {
		resp, err := http.Get(prod + "/nocontenttype")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "" {
			t.Fatalf("Content-Type %q, want none", ct)
		}
	})
	t.Run("HEAD keeps the length and has no body", func(t *testing.T) {
		resp, err := http.Head(prod + "/head")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ContentLength != 1234 {
			t.Fatalf("Content-Length %d, want 1234", resp.ContentLength)
		}
	})
	t.Run("103 early hints are skipped", func(t *testing.T) {
		if code, body := get(t, prod+"/early"); code != 200 || body != "final" {
			t.Fatalf("got %d %q", code, body)
		}
	})
	t.Run("204 has no body", func(t *testing.T) {
		if code, body := get(t, prod+"/nobody"); code != 204 || body != "" {
			t.Fatalf("got %d %q", code, body)
		}
	})
}

// TestStaleConnectionIsNotUsedForPOST: an instance closes its idle
// keep-alive connections (as a draining instance does); a POST that cannot
// be retried must not be sent on one of them.
func TestStaleConnectionIsNotUsedForPOST(t *testing.T) {
	prod, in, _ := proxyTo(t, echo)
	client := &http.Client{Transport: &http.Transport{}}
	for i := range 5 {
		// Fill the pool, then have the instance close every connection.
		if code, _ := get(t, prod); code != 200 {
			t.Fatalf("round %d: warm-up failed", i)
		}
		in.CloseClientConnections()
		resp, err := client.Post(prod+"/p", "text/plain", strings.NewReader("once"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "POST /p len=4 body=once") {
			t.Fatalf("round %d: POST after the instance closed its connections: %d %q", i, resp.StatusCode, b)
		}
	}
}

func TestCutOffResponseAbortsAndCounts(t *testing.T) {
	prod, in, p := proxyTo(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	})
	resp, err := http.Get(prod)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a response cut off by the instance reached the client whole")
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		if p.Failed(route.Prod) != 1 || in.inst.InFlight(route.Prod) != 0 {
			return fmt.Errorf("failed=%d in flight=%d, want 1 and 0", p.Failed(route.Prod), in.inst.InFlight(route.Prod))
		}
		return nil
	})
}

func TestClientGoneReleasesTheInstance(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	prod, in, _ := proxyTo(t, func(w http.ResponseWriter, r *http.Request) {
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-release:
				return
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Millisecond): // the instance's pace
			}
		}
	})
	resp, err := http.Get(prod)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close() // the client goes away mid-stream
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := in.inst.InFlight(route.Prod); n != 0 {
			return fmt.Errorf("%d requests still in flight", n)
		}
		return nil
	})
}
