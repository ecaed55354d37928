package h1

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestAPanicLeavesNothingToTheNextConnection: a handler that panics with
// an answer half written (a header set, body bytes buffered) loses its own
// connection; the next connections see nothing of it (the connection's
// pooled buffers, writer and response go to them), and are served whole.
func TestAPanicLeavesNothingToTheNextConnection(t *testing.T) {
	_, addr := start(t, &Server{ErrorLog: func(string) {}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			w.Header().Set("X-Leak", "1")
			w.Write([]byte(strings.Repeat("p", 100)))
			panic("boom")
		}
		fmt.Fprintf(w, "ok %s leak=%q", r.URL.Path, w.Header().Get("X-Leak"))
	})})
	for i := range 20 {
		c, br := dial(t, addr)
		fmt.Fprintf(c, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err == nil {
			t.Fatalf("%d: the panicking handler's answer was sent: %s", i, resp.Status)
		}
		c.Close()
		c, br = dial(t, addr)
		fmt.Fprintf(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		for _, path := range []string{"/a", "/b"} {
			if resp, body := read(t, br, "GET"); body != "ok "+path+` leak=""` || resp.Header.Get("X-Leak") != "" {
				t.Fatalf("%d: %s answered %q, X-Leak %q", i, path, body, resp.Header.Get("X-Leak"))
			}
		}
		if n, err := br.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("%d: after Connection: close, read %d, %v; want the end", i, n, err)
		}
		c.Close()
	}
}

// TestTheAnswerBeforeACloseArrivesWhole: the connection's end comes after
// the answer, whole, and is an end, not a reset: when the request asked to close with another request pipelined
// behind it (read, never answered), and when the client half-closed after
// its request.
func TestTheAnswerBeforeACloseArrivesWhole(t *testing.T) {
	_, addr := start(t, &Server{Handler: echo})
	for i := range 50 {
		c, br := dial(t, addr)
		fmt.Fprintf(c, "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, body := read(t, br, "GET"); !strings.HasPrefix(body, "GET /a ") {
			t.Fatalf("%d: answered %q", i, body)
		}
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("%d: after the answer to a request that closes: %q, %v; want the end", i, rest, err)
		}
		c, br = dial(t, addr)
		fmt.Fprintf(c, "POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		c.(*net.TCPConn).CloseWrite()
		if _, body := read(t, br, "POST"); !strings.HasPrefix(body, "POST /h ") || !strings.Contains(body, "body=abc") {
			t.Fatalf("%d: answered %q", i, body)
		}
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("%d: after the answer to a half-closed client: %q, %v; want the end", i, rest, err)
		}
	}
}

// TestChunksAcrossTheWriteBuffer: chunks smaller and larger than the
// connection's write buffer, and around its size, go out in order, each
// with its own size line (the writer's one line and iovecs serve every
// chunk), answer after answer on one connection.
func TestChunksAcrossTheWriteBuffer(t *testing.T) {
	sizes := []int{10, 5000, 3, 9000, 4093, 4094, 4095, 4096, 4097, 1, 70000, 2}
	body := func(k int) string {
		var b strings.Builder
		for i, n := range sizes {
			b.WriteString(strings.Repeat(string(rune('a'+(i+k)%26)), n))
		}
		return b.String()
	}
	_, addr := start(t, &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, _ := strconv.Atoi(r.URL.Query().Get("k"))
		for i, n := range sizes {
			w.Write([]byte(strings.Repeat(string(rune('a'+(i+k)%26)), n)))
		}
	})})
	c, br := dial(t, addr)
	for k := range 5 {
		fmt.Fprintf(c, "GET /?k=%d HTTP/1.1\r\nHost: x\r\n\r\n", k)
		resp, got := read(t, br, "GET")
		if len(resp.TransferEncoding) == 0 {
			t.Fatalf("%d: the answer is not chunked", k)
		}
		if got != body(k) {
			t.Fatalf("%d: the body of %d bytes is not the one sent (%d bytes)", k, len(got), len(body(k)))
		}
	}
}
