package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/route"
)

// BenchmarkRoundTrip is one GET through the proxy to a loopback instance,
// over keep-alive connections on both sides.
func BenchmarkRoundTrip(b *testing.B) {
	payload := []byte(`{"slot":"blue","version":"1","instance":"bench"}`)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }))
	defer backend.Close()
	inst := route.NewInstance("blue", backend.Listener.Addr().String())
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{inst}, nil))
	roundTrips(b, p, "")
}

// BenchmarkPublish builds a routing table and publishes it, as the
// controller does on every swap or health change, for tables of 2, 100 and
// 10,000 instances. Publishing itself is one atomic swap whatever the load.
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{2, 100, 10000} {
		b.Run(fmt.Sprint(n, "instances"), func(b *testing.B) {
			insts := make([]*route.Instance, n)
			for i := range insts {
				insts[i] = route.NewInstance("blue", fmt.Sprintf("127.0.0.1:%d", i))
			}
			p := New(Options{})
			b.ReportAllocs()
			rev := uint64(0)
			for b.Loop() {
				rev++
				p.Apply(table(rev, insts[:n/2], insts[n/2:]))
			}
		})
	}
}

// BenchmarkSwapWithInFlight measures a swap (building and publishing the
// swapped table) while 0, 256 or 1024 requests are in flight over as many
// open connections: the cost does not depend on them, since requests keep
// the table they started with and publishing is one atomic pointer store.
func BenchmarkSwapWithInFlight(b *testing.B) {
	for _, n := range []int{0, 256, 1024} {
		b.Run(fmt.Sprint(n, "inflight"), func(b *testing.B) {
			release := make(chan struct{})
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
			defer backend.Close()
			blue := route.NewInstance("blue", backend.Listener.Addr().String())
			green := route.NewInstance("green", backend.Listener.Addr().String())
			p := New(Options{})
			p.Apply(table(1, []*route.Instance{blue}, []*route.Instance{green}))
			front := httptest.NewServer(p.Handler(route.Prod))
			defer front.Close()
			client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: n + 1, MaxIdleConnsPerHost: n + 1}}
			done := make(chan struct{}, n)
			for range n {
				go func() {
					if resp, err := client.Get(front.URL); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					done <- struct{}{}
				}()
			}
			deadline := time.Now().Add(30 * time.Second)
			for blue.InFlight(route.Prod) < int64(n) {
				if time.Now().After(deadline) {
					b.Fatalf("only %d of %d requests in flight after 30s", blue.InFlight(route.Prod), n)
				}
				runtime.Gosched() // setup: wait until every request is in flight
			}
			rev := uint64(1)
			b.ReportAllocs()
			for b.Loop() {
				// A swap as the controller publishes it: build, then apply.
				rev++
				if rev%2 == 0 {
					p.Apply(table(rev, []*route.Instance{green}, []*route.Instance{blue}))
				} else {
					p.Apply(table(rev, []*route.Instance{blue}, []*route.Instance{green}))
				}
			}
			close(release)
			for range n {
				<-done
			}
		})
	}
}

// BenchmarkRecord is what the request path pays for metrics: finding the
// slot's counters and counting one answered request with its latency. It
// must not allocate (TestRecordDoesNotAllocate holds it to that).
func BenchmarkRecord(b *testing.B) {
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{route.NewInstance("blue", "127.0.0.1:1")}, nil))
	slot := p.table.Load().Slot(route.Prod)
	b.ReportAllocs()
	for b.Loop() {
		o := outcome{status: 200, latency: 3 * time.Millisecond, response: 3 * time.Millisecond, total: 4 * time.Millisecond,
			judged: true, source: sourceGroup("192.0.2.7:40000"), path: -1}
		p.stats(slot)[route.Prod].record(&o)
	}
}

// BenchmarkRoundTripRouted is BenchmarkRoundTrip on prod with version
// routes in the table and a canonical path with a query, the common case
// the path's normalisation must not slow down or make allocate.
func BenchmarkRoundTripRouted(b *testing.B) {
	payload := []byte(`{"slot":"green","version":"2","instance":"bench"}`)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }))
	defer backend.Close()
	blue := route.NewInstance("blue", backend.Listener.Addr().String())
	green := route.NewInstance("green", backend.Listener.Addr().String())
	var spec route.Spec
	spec.Listeners[route.Prod] = []route.Weighted{{Slot: "blue", Weight: 1}}
	spec.Routable = map[string][]*route.Instance{"blue": {blue}, "green": {green}}
	spec.Routes = []route.Route{{PathPrefix: "/api/1.0/", Slot: "blue"}, {PathPrefix: "/api/2.0/", Slot: "green"}}
	p := New(Options{})
	p.Apply(route.Build(spec))
	roundTrips(b, p, "/api/2.0/users/42?fields=name")
	if green.Served(route.Prod) == 0 {
		b.Fatal("the route did not send the requests to green")
	}
}

// roundTrips serves p's prod on loopback and sends it GET target from
// parallel keep-alive clients, b.N times in all; every answer must be 200.
func roundTrips(b *testing.B, p *Proxy, target string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go p.Serve(route.Prod, ln)
	defer p.Shutdown(context.Background())
	url := "http://" + ln.Addr().String() + target
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkForwardKeepAlive is one GET forwarded over a keep-alive client
// connection to a keep-alive instance connection, with a client and an
// instance that allocate nothing themselves (raw sockets, fixed bytes), so
// that allocs/op is the proxy's own per request.
func BenchmarkForwardKeepAlive(b *testing.B) {
	c := rawProxy(b, rawBackendAnswer, "}\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.roundTrip(b)
	}
}

// rawClient is a keep-alive client connection through the proxy that sends
// a fixed request and reads the instance's fixed answer.
type rawClient struct {
	nc   net.Conn
	req  []byte
	buf  []byte
	want int
}

func (c *rawClient) roundTrip(tb testing.TB) {
	if _, err := c.nc.Write(c.req); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(c.nc, c.buf[:c.want]); err != nil {
		tb.Fatal(err)
	}
	if string(c.buf[9:12]) != "200" {
		tb.Fatalf("answer %q", c.buf[:c.want])
	}
}

// rawBackendAnswer is what the raw instance answers every request with,
// dated as Go's and most servers' answers are.
const rawBackendAnswer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Mon, 07 Dec 2026 17:00:00 GMT\r\nContent-Length: 17\r\n\r\n{\"slot\":\"blue\"}\r\n"

// rawChunkedAnswer is rawBackendAnswer's body in one chunk, without a
// length, as Go's servers send an answer larger than their buffer.
const rawChunkedAnswer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Mon, 07 Dec 2026 17:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n{\"slot\":\"blue\"}\r\n\r\n0\r\n\r\n"

// rawProxy starts a raw instance (it answers every request head with
// answer, allocating nothing per request) and a proxy in front of it,
// sends one request through to learn the size of the proxy's answer,
// which ends with end, and returns the client connection.
func rawProxy(tb testing.TB, answer, end string) *rawClient {
	inst := route.NewInstance("blue", startRawAnswerer(tb, answer))
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{inst}, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go p.Serve(route.Prod, ln)
	tb.Cleanup(func() { p.Shutdown(context.Background()) })
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close() })
	c := &rawClient{nc: nc, req: []byte("GET /x HTTP/1.1\r\nHost: bench\r\nUser-Agent: raw\r\n\r\n"), buf: make([]byte, 4096)}
	// The first answer: read its head to learn the answer's size.
	if _, err := nc.Write(c.req); err != nil {
		tb.Fatal(err)
	}
	n := 0
	for {
		m, err := nc.Read(c.buf[n:])
		if err != nil {
			tb.Fatal(err)
		}
		n += m
		if i := indexHeadEnd(c.buf[:n]); i >= 0 && bytes.HasSuffix(c.buf[i:n], []byte(end)) {
			c.want = n
			break
		}
	}
	if n != c.want {
		tb.Fatalf("answer of %d bytes, want %d: %q", n, c.want, c.buf[:n])
	}
	return c
}

// indexHeadEnd returns the index just past the first "\r\n\r\n" in b, or -1.
func indexHeadEnd(b []byte) int {
	for i := 3; i < len(b); i++ {
		if b[i] == '\n' && b[i-1] == '\r' && b[i-2] == '\n' && b[i-3] == '\r' {
			return i + 1
		}
	}
	return -1
}

// startRawAnswerer starts an instance that answers every request head with
// answer, allocating nothing per request, and returns its address.
func startRawAnswerer(tb testing.TB, answer string) string {
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { bln.Close() })
	go func() {
		for {
			nc, err := bln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				buf, answer := make([]byte, 4096), []byte(answer)
				n := 0
				for {
					m, err := nc.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					// Answer each complete head (requests carry no body).
					for {
						i := indexHeadEnd(buf[:n])
						if i < 0 {
							break
						}
						if _, err := nc.Write(answer); err != nil {
							return
						}
						n = copy(buf, buf[i:n])
					}
					if n == len(buf) {
						return
					}
				}
			}()
		}
	}()
	return bln.Addr().String()
}

// BenchmarkH2RoundTrip is one GET through the proxy over HTTP/2 with TLS,
// many streams in flight on one client connection (as h2load's -m), to an
// HTTP/1.1 instance that allocates nothing. Client and proxy share the
// process: allocs/op and the CPU profile include the client's.
func BenchmarkH2RoundTrip(b *testing.B) {
	inst := route.NewInstance("blue", startRawAnswerer(b, rawBackendAnswer))
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{inst}, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cert := tlstest.Valid(b, b.TempDir(), "127.0.0.1")
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"h2", "http/1.1"}})
	go p.ServeWith(route.Prod, ln, Protocols{HTTP2: true})
	b.Cleanup(func() { p.Shutdown(context.Background()) })
	tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{RootCAs: cert.Pool()}, MaxConnsPerHost: 1}
	tr.Protocols.SetHTTP2(true)
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	url := "https://" + ln.Addr().String() + "/x"
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			return fmt.Errorf("%s %d", resp.Proto, resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil { // the connection, before the clock
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(50) // 100 streams on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSweepPool is one sweep of a pool of 512 idle loopback
// connections (maxIdlePerInstance), all open and quiet: the time the
// pool's lock is held, which requests taking or giving back a connection
// of that instance wait out (sweepLooks non-blocking looks, the rest
// passed over).
func BenchmarkSweepPool(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	inst := route.NewInstance("blue", backend.Listener.Addr().String())
	p := New(Options{})
	defer p.Shutdown(context.Background())
	p.Apply(table(1, []*route.Instance{inst}, nil))
	pl := p.poolFor(inst, nil)
	for range maxIdlePerInstance {
		c, err := p.conn(context.Background(), inst, nil, true, false, 0, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		pl.put(c)
	}
	later := time.Now().Add(time.Minute) // every one idle long enough to be looked at
	b.ResetTimer()
	for b.Loop() {
		if gone := pl.sweep(later, time.Second); len(gone) != 0 {
			b.Fatalf("%d open connections swept", len(gone))
		}
	}
}

// BenchmarkOutboundH2 builds the request sent on to an HTTP/2 instance
// from a gRPC call's: its header (copied, and X-Forwarded-*, Via and Te
// added) and URL. Its allocations are per call.
func BenchmarkOutboundH2(b *testing.B) {
	r, err := http.NewRequest("POST", "http://x/bench.Echo/Unary", nil)
	if err != nil {
		b.Fatal(err)
	}
	r.Header = http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}, "User-Agent": {"grpc-go/1.70.0"}, "Grpc-Accept-Encoding": {"gzip"}}
	r.RemoteAddr = "127.0.0.1:5555"
	rq := &request{o: &Options{}, uri: "/bench.Echo/Unary"}
	inst := &route.Instance{Addr: "127.0.0.1:1"}
	up := &Upstream{Protocol: H2C}
	b.ReportAllocs()
	for b.Loop() {
		outboundH2(context.Background(), r, rq, inst, up, "1.1 vipswap")
	}
}
