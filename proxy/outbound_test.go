package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// FuzzWriteRequest: whatever request net/http's parser accepts, vipswap
// writes it so that an instance parses back exactly one request with the same
// method, target, host, end-to-end headers and body, and nothing left over.
// A leftover byte would be the start of a smuggled request.
func FuzzWriteRequest(f *testing.F) {
	seeds := []string{
		"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nExpect: 100-continue\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://other/abs?q HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // refused by the server before vipswap sees it
		}
		if u := in.URL; u.Opaque != "" || (u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https") {
			return // h1 refuses such targets ("A:00"): they never reach writeRequest
		}
		inBody, err := io.ReadAll(in.Body)
		if err != nil {
			return // the client's body was malformed: the server answers 400
		}
		in.Body = io.NopCloser(bytes.NewReader(inBody))
		if in.ContentLength < 0 {
			in.ContentLength = -1
		}
		in.RemoteAddr = "192.0.2.1:1234"

		wantURI := in.URL.RequestURI()
		if in.RequestURI == "*" {
			wantURI = "*"
		}
		var wire bytes.Buffer
		bw := bufio.NewWriter(&wire)
		if err := writeRequest(bw, in, wantURI, in.Body, "1.1 vipswap-test", ""); err != nil {
			t.Fatalf("writeRequest: %v", err)
		}
		br := bufio.NewReader(bytes.NewReader(wire.Bytes()))
		out, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("the instance cannot parse what vipswap wrote: %v\n%q", err, wire.String())
		}
		outBody, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatalf("reading the forwarded body: %v\n%q", err, wire.String())
		}
		if br.Buffered() != 0 {
			t.Fatalf("%d bytes after the forwarded request (a smuggled request?)\n%q", br.Buffered(), wire.String())
		}
		switch {
		case out.Method != in.Method:
			t.Fatalf("method %q, want %q", out.Method, in.Method)
		case out.RequestURI != wantURI:
			t.Fatalf("target %q, want %q", out.RequestURI, wantURI)
		case out.Host != in.Host:
			t.Fatalf("host %q, want %q", out.Host, in.Host)
		case !bytes.Equal(outBody, inBody):
			t.Fatalf("body %q, want %q", outBody, inBody)
		}
		for k, vv := range in.Header {
			switch {
			case k == "Expect":
				if len(out.Header[k]) > 0 {
					t.Fatal("Expect was forwarded; vipswap answers 100-continue itself")
				}
			case skipOutbound[k], k == "Connection", k == "Upgrade", k == "Te":
				// rewritten by vipswap (framing, X-Forwarded-*, upgrade, trailers)
			case hopHeaders[k] || connectionListed(in.Header, k):
				if len(out.Header[k]) > 0 {
					t.Fatalf("hop-by-hop header %s was forwarded", k)
				}
			default:
				// Whitespace around a value is not part of it (RFC 9110
				// 5.5); net/http keeps a folded line's trailing space.
				trim := func(vv []string) []string {
					out := make([]string, len(vv))
					for i, v := range vv {
						out[i] = strings.Trim(v, " \t")
					}
					return out
				}
				if !slices.Equal(trim(out.Header[k]), trim(vv)) {
					t.Fatalf("header %s = %q, want %q", k, out.Header[k], vv)
				}
			}
		}
		if got := out.Header.Get("X-Forwarded-For"); !strings.HasSuffix(got, "192.0.2.1") {
			t.Fatalf("X-Forwarded-For %q does not end with the client", got)
		}
	})
}
