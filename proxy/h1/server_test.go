package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start serves h on a new listener and returns the server and its address.
func start(t *testing.T, s *Server) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.init() // so tests may look at s.parker
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		// Only ends a shutdown that hangs: a busy machine may be slow.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

// echo answers with what it read of the request.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s host=%s len=%d body=%s te=%v x=%q trailer=%q",
		r.Method, r.RequestURI, r.Host, r.ContentLength, body, r.TransferEncoding,
		r.Header.Values("X-A"), r.Trailer.Get("X-Sum"))
})

// dial opens a client connection with a deadline on everything it does.
func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func read(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

func TestRequests(t *testing.T) {
	_, addr := start(t, &Server{Handler: echo, MaxHeaderBytes: 8 << 10})
	cases := []struct {
		name, request string
		status        int
		body          string // prefix of the answer
	}{
		{"get", "GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n", 200, "GET /a?b=c host=x len=0 body= "},
		{"bare LF line endings", "GET / HTTP/1.1\nHost: x\n\n", 200, "GET / host=x"},
		{"content-length", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200, "POST /p host=x len=5 body=hello"},
		{"equal content-lengths", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", 200, "POST /p host=x len=2 body=hi"},
		{"chunked with trailer", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 3\r\n\r\n", 200,
			`POST /c host=x len=-1 body=abc te=[chunked] x=[] trailer="3"`},
		{"undeclared and forbidden trailers dropped", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: Host\r\n\r\n0\r\nHost: evil\r\nX-Sum: 1\r\n\r\n", 200,
			`POST /c host=x len=-1 body= te=[chunked] x=[] trailer=""`},
		{"obs-fold joined", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", 200, `GET / host=x len=0 body= te=[] x=["a b"]`},
		{"absolute form sets host", "GET http://real.example/p HTTP/1.1\r\nHost: other\r\n\r\n", 200, "GET http://real.example/p host=real.example"},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 200, "OPTIONS * host=x"},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 200, "GET / host= "},

		{"two different content-lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, "conflicting Content-Length"},
		{"content-length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", 400, "malformed Content-Length"},
		{"signed content-length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na", 400, "malformed Content-Length"},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "unsupported Transfer-Encoding"},
		{"two transfer-encodings", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "unsupported Transfer-Encoding"},
		{"transfer-encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "Transfer-Encoding in an HTTP/1.0"},
		{"space before colon", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n", 400, "malformed header line"},
		{"bare CR in a header", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, "bare CR"},
		{"NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "invalid character in header X-A"},
		{"fold before any header", "GET / HTTP/1.1\r\n X-A: a\r\nHost: x\r\n\r\n", 400, "folded line"},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, "missing Host"},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"},
		{"host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "malformed Host"},
		{"two spaces in the request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed request line"},
		{"HTTP/2 in text", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP version not supported"},
		{"not a version", "GET / HTTQ/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP version"},
		{"method not a token", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed method"},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, "CONNECT is not supported"},
		{"star for GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "only for OPTIONS"},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed request target"},
		{"oversized head", "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", 9<<10) + "\r\n\r\n", 431, "request headers too large"},
		{"expect something else", "GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417, "unsupported Expect"},
		{"malformed chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n", 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, br := dial(t, addr)
			io.WriteString(conn, c.request)
			resp, body := read(t, br, "GET")
			if resp.StatusCode != c.status || !strings.Contains(body, c.body) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, body, c.status, c.body)
			}
			if c.status >= 400 && c.status != 400 || c.status == 400 && c.body != "" {
				if !resp.Close {
					t.Fatalf("refusal did not close the connection")
				}
			}
		})
	}
}

// TestContentLengthBesideChunked: chunked wins (the length is ignored) and
// the connection closes after the answer, so nothing the client sent after
// the chunked body can be read as another request.
func TestContentLengthBesideChunked(t *testing.T) {
	_, addr := start(t, &Server{Handler: echo})
	conn, br := dial(t, addr)
	io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := read(t, br, "POST")
	if resp.StatusCode != 200 || !strings.Contains(body, "len=-1 body= te=[chunked]") || !resp.Close {
		t.Fatalf("got %d %q close=%v, want 200, chunked, and Connection: close", resp.StatusCode, body, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answer: %v, want EOF (no second request served)", err)
	}
}

func TestKeepAlivePipeliningAndHTTP10(t *testing.T) {
	_, addr := start(t, &Server{Handler: echo})
	t.Run("pipelined requests are answered in order on one connection", func(t *testing.T) {
		conn, br := dial(t, addr)
		io.WriteString(conn, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
		for _, want := range []string{"GET /1", "POST /2 host=x len=2 body=hi", "GET /3"} {
			if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, want) || resp.Close {
				t.Fatalf("got %d %q close=%v, want 200 %q kept open", resp.StatusCode, body, resp.Close, want)
			}
		}
	})
	t.Run("HTTP/1.0 closes unless asked to keep alive", func(t *testing.T) {
		conn, br := dial(t, addr)
		io.WriteString(conn, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, _ := read(t, br, "GET")
		if resp.Close || resp.Header.Get("Connection") != "keep-alive" {
			t.Fatalf("keep-alive HTTP/1.0 request: close=%v Connection=%q", resp.Close, resp.Header.Get("Connection"))
		}
		io.WriteString(conn, "GET /b HTTP/1.0\r\n\r\n")
		resp, body := read(t, br, "GET")
		if !resp.Close || !strings.HasPrefix(body, "GET /b") {
			t.Fatalf("plain HTTP/1.0 request: close=%v body=%q, want closed", resp.Close, body)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection still open: %v", err)
		}
	})
	t.Run("Connection: close is honoured", func(t *testing.T) {
		conn, br := dial(t, addr)
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if resp, _ := read(t, br, "GET"); !resp.Close {
			t.Fatal("response does not say Connection: close")
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("connection still open: %v", err)
		}
	})
}

func TestResponses(t *testing.T) {
	_, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
		case "/chunked":
			io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			io.WriteString(w, "b")
		case "/length":
			w.Header().Set("Content-Length", "3")
			io.WriteString(w, "abc")
		case "/short":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "abc")
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "data")
			w.Header().Set("X-Sum", "4")
		case "/split":
			w.Header().Set("X-A", "a\r\nSet-Cookie: evil=1")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
				panic("write after 204 allowed")
			}
		case "/panic":
			panic(http.ErrAbortHandler)
		case "/big-chunked", "/big-length":
			// Pieces larger than the 4 KiB buffer, behind buffered bytes,
			// go out with them in one writev: the bytes must stay in order.
			if r.URL.Path == "/big-length" {
				w.Header().Set("Content-Length", strconv.Itoa(len(bigBody)))
			}
			for i, n := 0, 0; i < len(bigBody); i, n = i+n, n*2+1 {
				n = min(n+3000, len(bigBody)-i)
				w.Write(bigBody[i : i+n])
			}
		}
	})})
	conn, br := dial(t, addr)
	get := func(method, path string) (*http.Response, string) {
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", method, path)
		return read(t, br, method)
	}
	if resp, body := get("GET", "/empty"); resp.ContentLength != 0 || body != "" {
		t.Errorf("empty: length %d body %q, want 0", resp.ContentLength, body)
	}
	if resp, body := get("GET", "/chunked"); body != "ab" || len(resp.TransferEncoding) != 1 {
		t.Errorf("chunked: body %q te %v", body, resp.TransferEncoding)
	}
	if resp, body := get("GET", "/length"); body != "abc" || resp.ContentLength != 3 {
		t.Errorf("length: body %q length %d", body, resp.ContentLength)
	}
	if resp, body := get("HEAD", "/length"); body != "" || resp.ContentLength != 3 {
		t.Errorf("HEAD: body %q length %d", body, resp.ContentLength)
	}
	if resp, body := get("GET", "/trailer"); body != "data" || resp.Trailer.Get("X-Sum") != "4" {
		t.Errorf("trailer: body %q trailer %v", body, resp.Trailer)
	}
	if resp, _ := get("GET", "/split"); resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("X-A") != "a  Set-Cookie: evil=1" {
		t.Errorf("header value split the response: %v", resp.Header)
	}
	for _, path := range []string{"/big-chunked", "/big-length"} {
		if resp, body := get("GET", path); body != string(bigBody) {
			t.Errorf("%s: %d bytes (te %v), want the %d sent, in order", path, len(body), resp.TransferEncoding, len(bigBody))
		}
	}
	if resp, body := get("GET", "/204"); resp.StatusCode != 204 || body != "" {
		t.Errorf("204: %d %q", resp.StatusCode, body)
	}
	// A body shorter than its length closes the connection: the client
	// sees the body cut off.
	fmt.Fprintf(conn, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	} else if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("short body read whole: %q", b)
	}

	conn, br = dial(t, addr)
	fmt.Fprintf(conn, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after an aborted handler: %v, want the connection closed", err)
	}
}

// bigBody is 100 KB of bytes that show any reordering.
var bigBody = func() []byte {
	b := make([]byte, 100_000)
	for i := range b {
		b[i] = byte('a' + i%26 + i/26%3)
	}
	return b
}()

func TestUnreadBody(t *testing.T) {
	_, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ignored the body")
	})})
	conn, br := dial(t, addr)
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	for range 2 {
		if resp, _ := read(t, br, "GET"); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("small unread body: %d close=%v, want the connection kept", resp.StatusCode, resp.Close)
		}
	}
	// A large unread body is not worth reading: the connection closes.
	big := maxDiscard * 2
	go func() {
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", big)
		conn.Write(make([]byte, big))
	}()
	read(t, br, "POST")
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after a large unread body: %v, want the connection closed", err)
	}
}

func TestExpectContinue(t *testing.T) {
	_, addr := start(t, &Server{Handler: echo})
	conn, br := dial(t, addr)
	io.WriteString(conn, "PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 100 {
		t.Fatalf("got %v %v, want 100 Continue before the body is sent", resp, err)
	}
	io.WriteString(conn, "ok")
	if resp, body := read(t, br, "PUT"); resp.StatusCode != 200 || !strings.Contains(body, "body=ok") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestTimeouts(t *testing.T) {
	// The idle timeout is long enough that a busy machine sends the second
	// request before it, whatever the wait for the parking took.
	s, addr := start(t, &Server{Handler: echo, ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 5 * time.Second})
	t.Run("a head sent too slowly is cut off", func(t *testing.T) {
		conn, br := dial(t, addr)
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost:")
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("got %v, want the connection closed", err)
		}
	})
	t.Run("an idle connection parks, serves again, and closes after the idle timeout", func(t *testing.T) {
		if s.parker == nil {
			t.Skip("no parking on this system")
		}
		conn, br := dial(t, addr)
		io.WriteString(conn, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
		read(t, br, "GET")
		vstest.WaitFor(t, 5*time.Second, func() error { return parked(s, 1) })
		io.WriteString(conn, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := read(t, br, "GET"); !strings.HasPrefix(body, "GET /2") {
			t.Fatalf("parked connection answered %q", body)
		}
		vstest.WaitFor(t, 5*time.Second, func() error { return parked(s, 1) })
		begin := time.Now()
		conn.SetReadDeadline(begin.Add(30 * time.Second)) // far beyond the idle timeout
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("got %v, want the connection closed", err)
		}
		t.Logf("closed %s after it parked (idle timeout 5s)", time.Since(begin).Round(time.Millisecond))
	})
}

// parked reports whether n connections are parked with no buffers.
func parked(s *Server, n int) error {
	s.parker.mu.Lock()
	defer s.parker.mu.Unlock()
	got := 0
	for _, c := range s.parker.conns {
		if c.state.Load() == stateParked && c.br == nil {
			got++
		}
	}
	if got != n {
		return fmt.Errorf("%d connections parked, want %d", got, n)
	}
	return nil
}

// TestHangUpCancelsSlowRequest: a client that leaves during a slow request
// cancels its context.
func TestHangUpCancelsSlowRequest(t *testing.T) {
	cancelled := make(chan error, 1)
	started := make(chan struct{})
	_, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			cancelled <- nil
		case <-time.After(time.Minute): // only ends a hung test
			cancelled <- fmt.Errorf("the request's context was not cancelled after the client hung up")
		}
	})})
	conn, _ := dial(t, addr)
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	conn.Close() // before the watch is armed: it must still see the hang-up
	if err := <-cancelled; err != nil {
		t.Fatal(err)
	}
}

func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()

	idle, idleBR := dial(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, idleBR, "GET")
	busy, busyBR := dial(t, addr)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started

	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(context.Background()) }()
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want closed by shutdown", err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if resp, body := read(t, busyBR, "GET"); body != "done" || !resp.Close {
		t.Fatalf("in-flight request: %q close=%v, want done and Connection: close", body, resp.Close)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

// TestShutdownServesFirstRequest: a new connection whose first request
// comes after Shutdown began (its client sent it as it connected; the
// server had not read it) is served, with Connection: close, within
// freshGrace. A kept-alive connection is closed at once (see TestShutdown).
func TestShutdownServesFirstRequest(t *testing.T) {
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "done") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()
	fresh, freshBR := dial(t, addr)
	// Connections are accepted in order: once a later one is served, the
	// server holds the fresh one.
	later, laterBR := dial(t, addr)
	io.WriteString(later, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, laterBR, "GET")

	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(context.Background()) }()
	vstest.WaitFor(t, 30*time.Second, func() error {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return errors.New("still accepting")
		}
		return nil
	})
	io.WriteString(fresh, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := read(t, freshBR, "GET"); body != "done" || !resp.Close {
		t.Fatalf("first request after shutdown began: %q close=%v, want done and Connection: close", body, resp.Close)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// An answer goes out inside the wait for the next request, and that wait
// no longer reads first (see sendAndAwait): a request the client sent
// while the one before was being answered, after the server read that
// one, may have been reported by the poller before the wait began. It
// must still be served (the wait ends and the connection parks, where it
// is seen), and so must the requests after it, again sent early.
func TestARequestSentWhileTheOneBeforeIsAnsweredIsServed(t *testing.T) {
	for _, transport := range []string{"cleartext", "TLS"} {
		t.Run(transport, func(t *testing.T) {
			var reading = make(chan struct{}) // the handler has the request
			var sent = make(chan struct{})    // the next request is on its way
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/last" {
					reading <- struct{}{}
					<-sent
				}
				io.WriteString(w, r.URL.Path)
			})
			var conn net.Conn
			var br *bufio.Reader
			if transport == "TLS" {
				conn, br = dialTLSTo(t, startTLS(t, &Server{Handler: h, IdleTimeout: time.Minute}))
			} else {
				_, addr := start(t, &Server{Handler: h})
				conn, br = dial(t, addr)
			}
			began := time.Now()
			io.WriteString(conn, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
			for i := 2; i <= 4; i++ {
				<-reading
				path := fmt.Sprintf("/%d", i)
				if i == 4 {
					path = "/last"
				}
				io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
				// The request is in the server's socket (or on its way)
				// before the handler answers the one before.
				sent <- struct{}{}
			}
			for _, want := range []string{"/1", "/2", "/3", "/last"} {
				resp, body := read(t, br, "GET")
				if resp.StatusCode != 200 || body != want {
					t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
				}
			}
			t.Logf("four requests, each sent before the answer to the one before: answered in %s", time.Since(began))
		})
	}
}

// TestATunnelProbesItsClient: a connection accepted without TCP keep-alive
// probes (vipswap's listeners) turns them on when a handler takes it
// (a tunnel, which has no idle timeout).
func TestATunnelProbesItsClient(t *testing.T) {
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probes := make(chan [2]int, 1) // SO_KEEPALIVE before and after the hijack
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before := keepAliveOf(t, w.(*response).c.nc)
		nc, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer nc.Close()
		probes <- [2]int{before, keepAliveOf(t, nc.(*hijackedConn).Conn)}
	})}
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	conn, _ := dial(t, ln.Addr().String())
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := <-probes; got != [2]int{0, 1} {
		t.Fatalf("SO_KEEPALIVE %d before the hijack and %d after, want 0 and 1", got[0], got[1])
	}
}

// keepAliveOf returns SO_KEEPALIVE of nc's socket.
func keepAliveOf(t *testing.T, nc net.Conn) int {
	var v int
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Error(err)
		return -1
	}
	rc.Control(func(fd uintptr) { v, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
	return v
}
