package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/vipswap/vipswap/internal/grpctest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// grpcFront serves p's prod handler to cleartext HTTP/2 clients (as an h2c
// listener does) and returns a gRPC client connection to it.
func grpcFront(t *testing.T, p *Proxy) *grpc.ClientConn {
	t.Helper()
	front := httptest.NewUnstartedServer(p.Handler(route.Prod))
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	front.Config.Protocols = &protos
	front.Start()
	t.Cleanup(func() {
		front.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p.Shutdown(ctx)
	})
	cc, err := grpc.NewClient("passthrough:///"+front.Listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func grpcProxy(t *testing.T, o Options, blue ...*route.Instance) (*Proxy, *grpc.ClientConn) {
	o.Upstreams = map[string]*Upstream{"blue": {Protocol: H2C}}
	p := New(o)
	p.Apply(table(1, blue, nil))
	return p, grpcFront(t, p)
}

func unary(ctx context.Context, cc *grpc.ClientConn, msg string) (string, error) {
	in, out := []byte(msg), []byte(nil)
	err := cc.Invoke(ctx, grpctest.Unary, &in, &out, grpc.CallContentSubtype(grpctest.Codec))
	return string(out), err
}

// TestGRPCThroughProxy: gRPC clients reach an h2c instance through vipswap:
// unary calls with their metadata and deadline, statuses counted by code
// (INTERNAL as an error), a bidirectional stream message by message and
// counted in flight while open, and a cancelled stream reset at the
// instance.
func TestGRPCThroughProxy(t *testing.T) {
	s := grpctest.Start(t, "b1", nil, "blue")
	inst := route.NewInstance("blue", s.Addr)
	p, cc := grpcProxy(t, Options{}, inst)

	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-test", "yes"), 30*time.Second)
	defer cancel()
	if got, err := unary(ctx, cc, "hello"); err != nil || got != "b1: hello" {
		t.Fatalf("unary: %q, %v", got, err)
	}
	if md := *s.Metadata.Load(); len(md["x-test"]) != 1 || len(md["via"]) != 1 || s.Deadlines.Load() != 1 {
		t.Errorf("the instance got metadata %v and %d deadlines, want x-test, via and the deadline", md, s.Deadlines.Load())
	}
	if _, err := unary(ctx, cc, "status 13"); status.Code(err) != codes.Internal {
		t.Fatalf("status 13: %v, want INTERNAL from the instance", err)
	}
	if _, err := unary(ctx, cc, "status 5"); status.Code(err) != codes.NotFound {
		t.Fatalf("status 5: %v, want NOT_FOUND from the instance", err)
	}
	c := p.Counters(route.Prod)["blue"]
	if c.GRPC[0] != 1 || c.GRPC[13] != 1 || c.GRPC[5] != 1 || c.InstanceErrors != 1 || c.Failed != 0 || c.Judged.Errors != 1 {
		t.Errorf("counts: grpc %v, instance errors %d, failed %d, judged errors %d; want OK, NOT_FOUND and INTERNAL once, one error (INTERNAL)",
			c.GRPC, c.InstanceErrors, c.Failed, c.Judged.Errors)
	}

	// A bidirectional stream: each answer comes before the next message.
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, grpctest.Bidi, grpc.CallContentSubtype(grpctest.Codec))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		in := []byte(fmt.Sprint("m", i))
		if err := st.SendMsg(&in); err != nil {
			t.Fatal(err)
		}
		var out []byte
		if err := st.RecvMsg(&out); err != nil || string(out) != fmt.Sprint("b1: m", i) {
			t.Fatalf("stream message %d: %q, %v", i, out, err)
		}
		if n := inst.InFlight(route.Prod); n != 1 {
			t.Errorf("in flight during the stream: %d, want 1", n)
		}
	}
	st.CloseSend()
	var out []byte
	if err := st.RecvMsg(&out); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want the end of the stream", err)
	}
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := inst.InFlight(route.Prod); n != 0 {
			return fmt.Errorf("%d in flight after the stream ended", n)
		}
		return nil
	})

	// A client that cancels its stream: the instance's stream ends too.
	sctx, scancel := context.WithCancel(ctx)
	st, err = cc.NewStream(sctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, grpctest.Bidi, grpc.CallContentSubtype(grpctest.Codec))
	if err != nil {
		t.Fatal(err)
	}
	in := []byte("x")
	st.SendMsg(&in)
	if err := st.RecvMsg(&out); err != nil {
		t.Fatal(err)
	}
	if s.Open.Load() != 1 {
		t.Fatalf("%d streams open at the instance, want 1", s.Open.Load())
	}
	scancel()
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n, f := s.Open.Load(), inst.InFlight(route.Prod); n != 0 || f != 0 {
			return fmt.Errorf("after the client cancelled: %d streams open at the instance, %d in flight", n, f)
		}
		return nil
	})
}

// TestGRPCFailuresOfVipswap: when vipswap cannot serve a gRPC call (no
// instance, every instance down) the client gets UNAVAILABLE in a
// trailers-only answer, and the call counts as failed.
func TestGRPCFailuresOfVipswap(t *testing.T) {
	p, cc := grpcProxy(t, Options{Hold: 50 * time.Millisecond}, route.NewInstance("blue", deadAddr(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := unary(ctx, cc, "hello")
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "vipswap: no instance") {
		t.Fatalf("got %v, want UNAVAILABLE saying vipswap found no instance", err)
	}
	if f := p.Failed(route.Prod); f != 1 {
		t.Errorf("%d failed, want 1", f)
	}

	// The answer as an HTTP/1.1 client sees it: 200, trailers-only.
	prod, _ := serve(t, p)
	req, _ := http.NewRequest(http.MethodPost, prod+grpctest.Unary, bytes.NewReader(grpcFrame("x")))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" || len(body) != 0 || resp.Header.Get("Content-Type") != "application/grpc" {
		t.Errorf("got %d %v %q, want 200, grpc-status 14 in the head, no body", resp.StatusCode, resp.Header, body)
	}
}

// TestGRPCOverHTTP1Client: an HTTP/1.1 client's gRPC request reaches an
// h2c gRPC instance; its status comes back as a trailer.
func TestGRPCOverHTTP1Client(t *testing.T) {
	s := grpctest.Start(t, "b1", nil, "blue")
	_, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{}, route.NewInstance("blue", s.Addr))
	req, _ := http.NewRequest(http.MethodPost, prod+grpctest.Unary, bytes.NewReader(grpcFrame("hi")))
	req.Header.Set("Content-Type", "application/grpc+raw")
	req.Header.Set("Te", "trailers")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, grpcFrame("b1: hi")) || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("got %d %q trailers %v, want the framed answer and grpc-status 0", resp.StatusCode, body, resp.Trailer)
	}
}

func grpcFrame(msg string) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// TestGRPCClaimDoesNotMakeAFailureA200: a client's Content-Type is a
// claim. A GET claiming application/grpc is no gRPC call (gRPC calls are
// POSTs): when vipswap cannot serve it, it got the 200 of a gRPC failure,
// cacheable, with an empty body, which a shared cache in front would keep
// and serve for that URL to everyone (a cache poisoned by one request).
// It gets the failure's own status; a real gRPC call still gets its
// trailers-only UNAVAILABLE, and neither may be stored by a cache.
func TestGRPCClaimDoesNotMakeAFailureA200(t *testing.T) {
	p := New(Options{Hold: 50 * time.Millisecond})
	p.Apply(table(1, []*route.Instance{route.NewInstance("blue", deadAddr(t))}, nil))
	prod, _ := serve(t, p)
	for _, c := range []struct {
		method string
		want   int
	}{{http.MethodGet, http.StatusBadGateway}, {http.MethodHead, http.StatusBadGateway}, {http.MethodPost, http.StatusOK}} {
		req, _ := http.NewRequest(c.method, prod+"/index.html", nil)
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want && !(c.want == http.StatusBadGateway && resp.StatusCode == http.StatusServiceUnavailable) {
			t.Errorf("%s claiming gRPC: %d, want %d", c.method, resp.StatusCode, c.want)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s claiming gRPC: Cache-Control %q, want no-store", c.method, cc)
		}
	}
}
