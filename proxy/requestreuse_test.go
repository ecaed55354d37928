package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/route"
)

// The request for an HTTP/2 instance is read by the transport's own
// goroutine, which may still be encoding its header when RoundTrip has
// returned (the client hung up between the transport's look at the
// context and its encoding) and the handler is gone: the client's
// connection then reads its next request, or another client's, into the
// same header map and value slices. The outbound header must own its
// values, or an instance may be sent one client's Authorization in
// another's request (and the race detector sees the encoder's read beside
// the next request's write).
func TestH2OutboundHeaderOwnsItsValues(t *testing.T) {
	outs := make(chan http.Header, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rq := &request{o: &Options{}, uri: r.RequestURI}
		out := outboundH2(context.Background(), r, rq, &route.Instance{Addr: "127.0.0.1:1"}, &Upstream{Protocol: H2C}, "1.1 vipswap")
		outs <- out.Header
		w.Write([]byte("ok"))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h1.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func(auth string) http.Header {
		t.Helper()
		io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: "+auth+"\r\nX-Tenant: "+auth+"\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return <-outs
	}
	first := ask("Bearer client-one")
	ask("Bearer client-two")
	for _, k := range []string{"Authorization", "X-Tenant"} {
		if got := first[k]; len(got) != 1 || got[0] != "Bearer client-one" {
			t.Errorf("the header built for an instance from the first request has %s %q once the next request was read", k, got)
		}
	}
}

// A client that hangs up while an instance is slow to answer has the
// instance connection interrupted (the cancellation watch the client's
// connection keeps, AfterCancel): on a kept connection whose request
// before took the watch and gave it back, and on the second attempt of a
// request whose first instance closed without answering.
func TestHangUpInterruptsTheInstanceOnAKeptConnection(t *testing.T) {
	var slowHits atomic.Int32
	started := make(chan struct{}, 1)
	gone := make(chan struct{}, 1)
	h := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "ok")
			return
		}
		if slowHits.Add(1) == 1 {
			// The first attempt: closed without a word, so the request
			// goes to another attempt (a GET may).
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		started <- struct{}{}
		<-r.Context().Done() // the proxy closed the connection
		gone <- struct{}{}
	}
	a := newInstance(t, "blue", "a", h)
	b := newInstance(t, "blue", "b", h)
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{a.inst, b.inst}, nil))
	prod, _ := serve(t, p)
	conn, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for range 3 { // the watch taken and given back, on both instances' connections
		io.WriteString(conn, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the request never reached a second attempt")
	}
	conn.Close() // seen once the proxy watches the slow request for a hang-up
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatal("the client hung up, and the instance connection was never interrupted")
	}
}

// TestH2OutboundFieldsShareNoRoom: the outbound header's values live in
// one array, the fields vipswap adds (Te, X-Forwarded-*, Via) with the
// copied ones: each field's slice ends where its values do, so adding a
// value to one (Header.Add, append) writes to a copy and leaves every
// other field as it was.
func TestH2OutboundFieldsShareNoRoom(t *testing.T) {
	r, err := http.NewRequest("POST", "http://x/svc/Call", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header = http.Header{
		"Content-Type": {"application/grpc"}, "Te": {"trailers"}, "User-Agent": {"grpc-go"},
		"X-Forwarded-For": {"10.0.0.1"}, "Via": {"1.1 edge"}, "Accept": {"a", "b"},
	}
	r.RemoteAddr = "127.0.0.1:5555"
	rq := &request{o: &Options{}, uri: "/svc/Call"}
	out := outboundH2(context.Background(), r, rq, &route.Instance{Addr: "127.0.0.1:1"}, &Upstream{Protocol: H2C}, "1.1 vipswap")
	want := make(map[string][]string, len(out.Header))
	for k, vv := range out.Header {
		want[k] = append([]string(nil), vv...)
	}
	for _, k := range []string{"Te", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Via"} {
		if len(out.Header[k]) != 1 {
			t.Fatalf("%s: %q, want one value", k, out.Header[k])
		}
	}
	for k := range want {
		out.Header.Add(k, "added to "+k)
		for other, vv := range want {
			got := out.Header[other]
			if other == k {
				got = got[:len(got)-1]
			}
			if !slices.Equal(got, vv) {
				t.Fatalf("a value added to %s changed %s: %q, want %q", k, other, got, vv)
			}
		}
		out.Header[k] = out.Header[k][:len(out.Header[k])-1]
	}
}
