package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/vipswap/vipswap/route"
)

// echoingAnswerer is an instance that answers each request with its path
// in a header (X-Path) and in a chunked body, and, for paths ending in
// "/extra", one more header (X-Extra). A chunked answer has no length: the
// client's connection sends its head only when the handler has returned,
// after the instance connection went back to the pool and may carry
// another client's request.
func echoingAnswerer(t *testing.T) *route.Instance {
	t.Helper()
	return rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		path, extra := r.URL.Path, ""
		if strings.HasSuffix(path, "/extra") {
			extra = "X-Extra: yes\r\n"
		}
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Path: %s\r\n%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, extra, len(path), path)
		return err == nil
	})
}

// A client connection reads the instances' answers to its requests into
// the same answer, header map and value slices, one after another (so
// forwarding allocates nothing). Each answer must carry its own head and
// nothing of the one before on the connection, nor of any other client's,
// whose answers come over the same instance connections.
func TestAnAnswerSeesNothingOfAnother(t *testing.T) {
	prod, _ := proxyOf(t, Options{}, echoingAnswerer(t))

	getEach(t, prod, 4, 150, func(c, i int) string {
		path := fmt.Sprintf("/c%d/r%d", c, i)
		if i%3 == 0 {
			path += "/extra"
		}
		return path
	}, func(path string, resp *http.Response, body []byte) error {
		switch {
		case resp.Header.Get("X-Path") != path || string(body) != path:
			return fmt.Errorf("asked for %s, got the head of %q and the body of %q", path, resp.Header.Get("X-Path"), body)
		case len(resp.Header["X-Path"]) != 1:
			return fmt.Errorf("%s: X-Path %q, want one value", path, resp.Header["X-Path"])
		case (resp.Header.Get("X-Extra") != "") != strings.HasSuffix(path, "/extra"):
			return fmt.Errorf("%s: X-Extra %q: a header of another answer", path, resp.Header.Get("X-Extra"))
		}
		return nil
	})
}

// getEach runs clients clients at once, each on a connection of its own,
// each asking prod for each paths (path gives the i-th of client c) one
// after another, and fails t with what check finds wrong in an answer (a
// client stops at its first).
func getEach(t *testing.T, prod string, clients, each int, path func(c, i int) string, check func(path string, resp *http.Response, body []byte) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Go(func() {
			tr := &http.Transport{MaxConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			for i := range each {
				path := path(c, i)
				resp, err := cl.Get(prod + path)
				if err != nil {
					errs <- err
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					err = check(path, resp, body)
				} else {
					err = fmt.Errorf("%s: %v", path, err)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestAChunkedAnswerFollowedByBytesSmugglesNothing: an instance that sends
// a whole answer of its own after a chunked one's end (after an empty
// trailer section or a declared trailer, in the same write, so the reader
// holds it) gets no client to read it: each client reads its own answer,
// with its own trailer, on connections whose answers are read into one
// store after another.
func TestAChunkedAnswerFollowedByBytesSmugglesNothing(t *testing.T) {
	inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		path, declared, end, extra := r.URL.Path, "", "0\r\n\r\n", ""
		if strings.Contains(path, "/trail") {
			declared, end = "Trailer: X-T\r\n", "0\r\nX-T: "+path+"\r\n\r\n"
		}
		if strings.Contains(path, "/smuggle") {
			extra = "HTTP/1.1 200 OK\r\nX-Path: /smuggled\r\nContent-Length: 8\r\n\r\nSMUGGLED"
		}
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Path: %s\r\n%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%s%s",
			path, declared, len(path), path, end, extra)
		return err == nil
	})
	prod, _ := proxyOf(t, Options{}, inst)
	getEach(t, prod, 4, 120, func(c, i int) string {
		return fmt.Sprintf("/c%d/r%d", c, i) + []string{"", "/smuggle", "/trail", "/trail/smuggle"}[i%4]
	}, func(path string, resp *http.Response, body []byte) error {
		trailer := ""
		if strings.Contains(path, "/trail") {
			trailer = path
		}
		if resp.Header.Get("X-Path") != path || string(body) != path || resp.Trailer.Get("X-T") != trailer {
			return fmt.Errorf("asked for %s: the head of %q, the body %q, the trailer %q",
				path, resp.Header.Get("X-Path"), body, resp.Trailer.Get("X-T"))
		}
		return nil
	})
}

// TestALongChunkFollowedByBytesSmugglesNothing: as above, with a chunk
// longer than the connection's read buffer, so that its rest is read
// straight into the body's buffer and what follows it (the body's end, and
// an answer the instance sends unasked, small enough to come with it) is
// read ahead in the same system call: that answer reaches no client, and
// every client gets its own body whole.
func TestALongChunkFollowedByBytesSmugglesNothing(t *testing.T) {
	long := strings.Repeat("x", 3*bufferSize)
	inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		path, extra := r.URL.Path, ""
		if strings.Contains(path, "/smuggle") {
			extra = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nBAD" // with the end, within what is read ahead
		}
		body := path + long
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Path: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n%s", path, len(body), body, extra)
		return err == nil
	})
	prod, _ := proxyOf(t, Options{}, inst)
	getEach(t, prod, 4, 100, func(c, i int) string {
		return fmt.Sprintf("/c%d/r%d", c, i) + []string{"", "/smuggle"}[i%2]
	}, func(path string, resp *http.Response, body []byte) error {
		if resp.Header.Get("X-Path") != path || string(body) != path+long {
			return fmt.Errorf("asked for %s: the head of %q, a body of %d bytes starting %.20q", path, resp.Header.Get("X-Path"), len(body), body)
		}
		return nil
	})
}

// TestBodiesAroundTheSmallBuffer: a body whose Content-Length is at most
// smallBufferSize is copied through a small buffer, a larger one through
// the large: either way each client gets its body whole, byte for byte,
// over HTTP/1.1 keep-alive, at sizes on both sides of the line, the
// instance sending head and body in one write or the body in pieces.
func TestBodiesAroundTheSmallBuffer(t *testing.T) {
	sizes := []int{0, 1, smallBufferSize - 1, smallBufferSize, smallBufferSize + 1, 3 * smallBufferSize}
	inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		var size, pieces int
		fmt.Sscanf(r.URL.Path, "/%d/%d", &size, &pieces)
		body := strings.Repeat(r.URL.Path[1:2], size)
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size); err != nil {
			return false
		}
		for i := range pieces {
			if _, err := io.WriteString(c, body[i*size/pieces:(i+1)*size/pieces]); err != nil {
				return false
			}
		}
		return true
	})
	prod, _ := proxyOf(t, Options{}, inst)
	getEach(t, prod, 3, 2*len(sizes)*2, func(c, i int) string {
		return fmt.Sprintf("/%d/%d", sizes[i%len(sizes)], 1+3*(i/len(sizes)%2))
	}, func(path string, resp *http.Response, body []byte) error {
		var size, pieces int
		fmt.Sscanf(path, "/%d/%d", &size, &pieces)
		if resp.StatusCode != http.StatusOK || string(body) != strings.Repeat(path[1:2], size) {
			return fmt.Errorf("%s: status %d, %d bytes, want %d of %q", path, resp.StatusCode, len(body), size, path[1:2])
		}
		return nil
	})
}
