package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"testing"
)

// FuzzReadRequest checks h1's parser against net/http's: whatever h1
// accepts, net/http accepts too and reads as the same request (method,
// target, host, fields, framing and body). h1 may refuse more; it must never
// read a message differently, which is what request smuggling needs.
func FuzzReadRequest(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-S\r\n\r\n3;e=1\r\nabc\r\n0\r\nX-S: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET http://h/p HTTP/1.0\nX-A: a\n b\n\n",
		"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// A connection goes on after a request: end the input with another,
		// so parsers are not compared on how they meet the end of input.
		raw = append(raw[:len(raw):len(raw)], "GET /next HTTP/1.1\r\nHost: n\r\n\r\n"...)
		got, err := readRequest(newRequestStore(context.Background()), bufio.NewReader(bytes.NewReader(raw)), limits{64 << 10, 100}, "192.0.2.1:1")
		if err != nil {
			return
		}
		gotBody, gotErr := io.ReadAll(got.Body)
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatalf("h1 accepts what net/http refuses (%v):\n%q", err, raw)
		}
		wantBody, wantErr := io.ReadAll(want.Body)
		if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Host != want.Host || got.Proto != want.Proto {
			t.Fatalf("request line read differently: h1 %s %s %s host %q, net/http %s %s %s host %q\n%q",
				got.Method, got.RequestURI, got.Proto, got.Host, want.Method, want.RequestURI, want.Proto, want.Host, raw)
		}
		if got.ContentLength != want.ContentLength || !slices.Equal(got.TransferEncoding, want.TransferEncoding) {
			t.Fatalf("framing read differently: h1 %d %v, net/http %d %v\n%q",
				got.ContentLength, got.TransferEncoding, want.ContentLength, want.TransferEncoding, raw)
		}
		if (gotErr == nil) != (wantErr == nil) || (gotErr == nil && !bytes.Equal(gotBody, wantBody)) {
			t.Fatalf("body read differently: h1 %q (%v), net/http %q (%v)\n%q", gotBody, gotErr, wantBody, wantErr, raw)
		}
		if got.Close != want.Close && !(got.Close && got.ContentLength < 0) {
			t.Fatalf("h1 close=%v, net/http close=%v\n%q", got.Close, want.Close, raw)
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

// TestCommonHeadersAreCanonical: a field name read is given the interned
// string only in its canonical spelling, as textproto would spell it.
func TestCommonHeadersAreCanonical(t *testing.T) {
	for name, k := range commonHeaders {
		if want := textproto.CanonicalMIMEHeaderKey(name); k != want {
			t.Errorf("commonHeaders[%q] = %q, want %q", name, k, want)
		}
	}
	if got := internHeader([]byte("date")); got != "Date" {
		t.Errorf("internHeader(date) = %q", got)
	}
	if got := internHeader([]byte("x-unknown-field")); got != "X-Unknown-Field" {
		t.Errorf("internHeader(x-unknown-field) = %q", got)
	}
}
