package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func readResp(t *testing.T, raw, method string, l ResponseLimits) (*http.Response, string, error) {
	t.Helper()
	resp, err := ReadResponse(bufio.NewReader(strings.NewReader(raw)), method, l)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func TestReadResponse(t *testing.T) {
	cases := []struct {
		name, raw, method string
		status            int
		body              string
		close             bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokNEXT", "GET", 200, "ok", false},
		{"chunked with a trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-S\r\n\r\n2\r\nok\r\n0\r\nX-S: 1\r\n\r\n", "GET", 200, "ok", false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nall of it", "GET", 200, "all of it", true},
		{"HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", 200, "ok", true},
		{"HTTP/1.0 with keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "GET", 200, "ok", false},
		{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", "GET", 200, "ok", true},
		{"early hints are skipped", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", 200, "ok", false},
		{"204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", "GET", 204, "", false},
		{"204 with a length closes", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", "GET", 204, "", true},
		{"304 with a length keeps it", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET", 304, "", false},
		{"304 chunked closes", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 304, "", true},
		{"HEAD has no body and closes", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", 200, "", true},
		{"chunked beside a length: chunked, then close", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", 200, "ok", true},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "GET", 200, "ok", false},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", "GET", 200, "ok", false},
		{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: Upgrade\r\n\r\nframes", "GET", 101, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body, err := readResp(t, c.raw, c.method, ResponseLimits{})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status || body != c.body || resp.Close != c.close {
				t.Fatalf("got %d %q close=%v, want %d %q close=%v", resp.StatusCode, body, resp.Close, c.status, c.body, c.close)
			}
		})
	}
	invalid := []struct{ name, raw string }{
		{"garbage", "SSH-2.0-OpenSSH\r\n\r\n"},
		{"HTTP/2", "HTTP/2.0 200 OK\r\n\r\n"},
		{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n"},
		{"bare CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok"},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"},
		{"unknown coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
		{"chunked in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"truncated head", "HTTP/1.1 200 OK\r\nContent-"},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		{"NUL in a value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n"},
		{"fold first", "HTTP/1.1 200 OK\r\n folded\r\n\r\n"},
	}
	for _, c := range invalid {
		t.Run("refuses "+c.name, func(t *testing.T) {
			_, _, err := readResp(t, c.raw, "GET", ResponseLimits{})
			var re *ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want a *ResponseError", err)
			}
		})
	}
	t.Run("nothing at all is the connection's error", func(t *testing.T) {
		if _, _, err := readResp(t, "", "GET", ResponseLimits{}); err != io.EOF {
			t.Fatalf("got %v, want io.EOF", err)
		}
	})
	t.Run("limits", func(t *testing.T) {
		big := "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n"
		if _, _, err := readResp(t, big, "GET", ResponseLimits{MaxHeaderBytes: 1024}); err == nil || !strings.Contains(err.Error(), "larger than 1024") {
			t.Fatalf("got %v", err)
		}
		many := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: a\r\n", 11) + "\r\n"
		if _, _, err := readResp(t, many, "GET", ResponseLimits{MaxHeaderFields: 10}); err == nil || !strings.Contains(err.Error(), "more than 10") {
			t.Fatalf("got %v", err)
		}
		// The byte budget spans informational responses: a flood of 103s
		// cannot go on forever.
		flood := strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 1000) + "HTTP/1.1 200 OK\r\n\r\n"
		if _, _, err := readResp(t, flood, "GET", ResponseLimits{MaxHeaderBytes: 4096}); err == nil {
			t.Fatal("a flood of 103s was read to its end")
		}
	})
}

// FuzzReadResponse checks ReadResponse against net/http's: whatever h1
// accepts, net/http accepts too and reads the same (status, fields,
// framing, body). h1 may refuse more (a head, or a body it stops reading),
// and may close more.
func FuzzReadResponse(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-S\r\n\r\n2;x=1\r\nok\r\n0\r\nX-S: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\nX-A: a\n b\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 599 \r\n\r\nrest",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, head bool) {
		// A connection goes on after a response: end the input with
		// another, so parsers are not compared on how they meet its end.
		raw = append(raw[:len(raw):len(raw)], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"...)
		method := "GET"
		if head {
			method = "HEAD"
		}
		got, err := ReadResponse(bufio.NewReader(bytes.NewReader(raw)), method, ResponseLimits{})
		if err != nil {
			return
		}
		gotBody, gotErr := io.ReadAll(got.Body)
		br := bufio.NewReader(bytes.NewReader(raw))
		want, err := http.ReadResponse(br, &http.Request{Method: method})
		for err == nil && want.StatusCode < 200 && want.StatusCode != 101 {
			want, err = http.ReadResponse(br, &http.Request{Method: method})
		}
		if err != nil {
			t.Fatalf("h1 accepts what net/http refuses (%v):\n%q", err, raw)
		}
		wantBody, wantErr := io.ReadAll(want.Body)
		if got.StatusCode != want.StatusCode || got.Proto != want.Proto {
			t.Fatalf("status line read differently: h1 %d %s, net/http %d %s\n%q", got.StatusCode, got.Proto, want.StatusCode, want.Proto, raw)
		}
		if got.StatusCode == 101 {
			return // the rest is the tunnel's
		}
		if !head && (got.ContentLength != want.ContentLength || !slices.Equal(got.TransferEncoding, want.TransferEncoding)) {
			t.Fatalf("framing read differently: h1 %d %v, net/http %d %v\n%q",
				got.ContentLength, got.TransferEncoding, want.ContentLength, want.TransferEncoding, raw)
		}
		if gotErr == nil && (wantErr != nil || !bytes.Equal(gotBody, wantBody)) {
			t.Fatalf("body read differently: h1 %q (%v), net/http %q (%v)\n%q", gotBody, gotErr, wantBody, wantErr, raw)
		}
		if want.Close && !got.Close {
			t.Fatalf("net/http closes, h1 would reuse the connection\n%q", raw)
		}
		for _, h := range []http.Header{got.Header, want.Header} {
			delete(h, "Content-Length")
			delete(h, "Transfer-Encoding")
			delete(h, "Trailer")
		}
		for k, v := range got.Trailer {
			if !slices.Equal(v, want.Trailer[k]) {
				t.Fatalf("trailer %s: h1 %q, net/http %q\n%q", k, v, want.Trailer[k], raw)
			}
		}
		if !maps.EqualFunc(got.Header, want.Header, slices.Equal) {
			t.Fatalf("fields read differently:\nh1       %q\nnet/http %q\n%q", got.Header, want.Header, raw)
		}
	})
}

// TestChunkedAnswersBackToBack: a chunked answer's end is read exactly,
// with or without a trailer section, whatever its line endings and however
// its bytes arrive, so the answer after it on the same connection is read
// whole; a declared trailer's value reaches the response.
func TestChunkedAnswersBackToBack(t *testing.T) {
	const next = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
	for _, c := range []struct{ name, end, trailer string }{
		{"no trailer", "0\r\n\r\n", ""},
		{"no trailer, bare LF", "0\r\n\n", ""},
		{"a trailer", "0\r\nX-S: 1\r\n\r\n", "1"},
		{"a trailer, bare LF", "0\r\nX-S: 1\n\n", "1"},
	} {
		for _, oneByte := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/one byte at a time %v", c.name, oneByte), func(t *testing.T) {
				raw := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-S\r\n\r\n2\r\nok\r\n" + c.end + next
				var r io.Reader = strings.NewReader(raw)
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				br := bufio.NewReader(r)
				resp, err := ReadResponse(br, "GET", ResponseLimits{})
				if err != nil {
					t.Fatal(err)
				}
				if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
					t.Fatalf("body %q, %v", b, err)
				}
				if got := resp.Trailer.Get("X-S"); got != c.trailer {
					t.Errorf("trailer X-S = %q, want %q", got, c.trailer)
				}
				resp, err = ReadResponse(br, "GET", ResponseLimits{})
				if err != nil {
					t.Fatalf("the next answer: %v", err)
				}
				if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "next" {
					t.Fatalf("the next answer's body %q, %v", b, err)
				}
			})
		}
	}
}
