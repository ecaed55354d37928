package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/route"
)

// upstreamInstance is an instance served over TLS, h2c or h2, counting
// the connections it accepted.
type upstreamInstance struct {
	*instance
	conns atomic.Int64
}

// bothHTTP1AndH2C makes newUpstreamInstance serve HTTP/1.1 and h2c.
const bothHTTP1AndH2C Protocol = "http1+h2c"

// newUpstreamInstance starts an instance of slot speaking protocol (TLS when
// cert is set: HTTP/1.1 over TLS for HTTP1, HTTP/2 for H2), with the server
// TLS config tune changes, if set.
func newUpstreamInstance(t *testing.T, slot, name string, proto Protocol, cert *tlstest.Cert, tune func(*tls.Config), h http.HandlerFunc) *upstreamInstance {
	t.Helper()
	in := &upstreamInstance{instance: &instance{name: name}}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.hits.Add(1)
		h(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			in.conns.Add(1)
		}
	}
	var protos http.Protocols
	switch proto {
	case bothHTTP1AndH2C:
		protos.SetHTTP1(true)
		protos.SetUnencryptedHTTP2(true)
	case H2C:
		protos.SetUnencryptedHTTP2(true)
	case H2:
		protos.SetHTTP2(true)
	default:
		protos.SetHTTP1(true)
	}
	srv.Config.Protocols = &protos
	if cert != nil {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
		if proto == H2 {
			srv.TLS.NextProtos = []string{"h2"}
		}
		if tune != nil {
			tune(srv.TLS)
		}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	in.Server = srv
	t.Cleanup(srv.Close)
	in.inst = route.NewInstance(slot, srv.Listener.Addr().String())
	return in
}

// proxyWith returns a proxy whose blue slot is reached as up says, serving
// blue on prod.
func proxyWith(t *testing.T, up *Upstream, o Options, blue ...*route.Instance) (*Proxy, string) {
	t.Helper()
	o.Upstreams = map[string]*Upstream{"blue": up}
	p := New(o)
	p.Apply(table(1, blue, nil))
	prod, _ := serve(t, p)
	return p, prod
}

func TestHTTPSInstancesAreVerifiedAndKeptAlive(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	var sni atomic.Value
	in := newUpstreamInstance(t, "blue", "b1", HTTP1, &cert, func(c *tls.Config) {
		c.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni.Store(h.ServerName)
			return nil, nil
		}
	}, func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			t.Error("the instance got a request in cleartext")
		}
		io.WriteString(w, "secure "+r.Proto)
	})
	p, prod := proxyWith(t, &Upstream{Protocol: HTTP1, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "a"}, Options{}, in.inst)
	const n = 20
	for range n {
		if code, body := get(t, prod); code != 200 || body != "secure HTTP/1.1" {
			t.Fatalf("got %d %q, want 200 %q", code, body, "secure HTTP/1.1")
		}
	}
	if got := sni.Load(); got != "app.internal" {
		t.Errorf("the instance was asked for %v, want app.internal (SNI)", got)
	}
	if c := in.conns.Load(); c >= n {
		t.Errorf("%d requests took %d TLS connections: none was reused", n, c)
	}
	if f := p.Failed(route.Prod); f != 0 {
		t.Errorf("%d failed", f)
	}
}

func TestHTTPSInstanceWithAnotherCAIsRefused(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	other := tlstest.Valid(t, dir, "other.internal")
	in := newUpstreamInstance(t, "blue", "b1", HTTP1, &cert, nil, nil)
	p, prod := proxyWith(t, &Upstream{Protocol: HTTP1, TLS: &tls.Config{RootCAs: other.Pool(), ServerName: "app.internal"}, Fingerprint: "b"},
		Options{Hold: 100 * time.Millisecond}, in.inst)
	if code, body := get(t, prod); code != http.StatusBadGateway {
		t.Fatalf("got %d %q, want 502", code, body)
	}
	if in.hits.Load() != 0 {
		t.Error("the instance got the request over a connection vipswap should not trust")
	}
	if f := p.Failed(route.Prod); f != 1 {
		t.Errorf("%d failed, want 1", f)
	}
}

func TestMutualTLSToInstances(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	client := tlstest.Valid(t, dir, "vipswap.client")
	for _, proto := range []Protocol{HTTP1, H2} {
		t.Run(string(proto), func(t *testing.T) {
			in := newUpstreamInstance(t, "blue", "b1", proto, &cert, func(c *tls.Config) {
				c.ClientAuth = tls.RequireAndVerifyClientCert
				c.ClientCAs = client.Pool()
			}, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
			})
			up := &Upstream{Protocol: proto, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal", Certificates: []tls.Certificate{client.TLS}}, Fingerprint: "c"}
			p, prod := proxyWith(t, up, Options{}, in.inst)
			if code, body := get(t, prod); code != 200 || body != "vipswap.client" {
				t.Fatalf("with the client certificate: %d %q, want 200 vipswap.client", code, body)
			}
			// Without it the instance refuses the handshake: the request
			// never reached it, and fails (one instance) without a retry
			// counted against it.
			p2, prod2 := proxyWith(t, &Upstream{Protocol: proto, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "d"},
				Options{Hold: 100 * time.Millisecond}, in.inst)
			before := in.hits.Load()
			if code, body := get(t, prod2); code != http.StatusBadGateway {
				t.Fatalf("without a client certificate: %d %q, want 502", code, body)
			}
			if in.hits.Load() != before {
				t.Error("the instance served a client without a certificate")
			}
			if f := p.Failed(route.Prod) + p2.Failed(route.Prod); f != 1 {
				t.Errorf("%d failed, want 1", f)
			}
		})
	}
}

func TestHTTP2Instances(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	cases := []struct {
		proto Protocol
		cert  *tlstest.Cert
		up    *Upstream
	}{
		{H2C, nil, &Upstream{Protocol: H2C}},
		{H2, &cert, &Upstream{Protocol: H2, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "e"}},
	}
	for _, c := range cases {
		t.Run(string(c.proto), func(t *testing.T) {
			in := newUpstreamInstance(t, "blue", "b1", c.proto, c.cert, nil, func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				// Trailers not announced, as gRPC sends its status: an
				// HTTP/1.1 client gets gRPC's, announced by vipswap.
				w.Header().Set("Content-Type", "application/grpc+test")
				io.WriteString(w, r.Proto+" "+r.Method+" "+r.RequestURI+" host="+r.Host+" body="+string(body)+" xff="+r.Header.Get("X-Forwarded-For")+" conn="+r.Header.Get("X-Hop"))
				w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			})
			p, prod := proxyWith(t, c.up, Options{}, in.inst)
			for i := range 10 {
				req, _ := http.NewRequest(http.MethodPost, prod+"/a/../b?q=1", strings.NewReader("hello"))
				req.Host = "app.example"
				req.Header.Set("Connection", "X-Hop")
				req.Header.Set("X-Hop", "hop-by-hop")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := "HTTP/2.0 POST /b?q=1 host=app.example body=hello xff=127.0.0.1 conn="
				if resp.StatusCode != 200 || string(b) != want {
					t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, b, want)
				}
				if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
					t.Errorf("trailer Grpc-Status: %q, want 0", got)
				}
			}
			if n := in.conns.Load(); n != 1 {
				t.Errorf("10 requests took %d HTTP/2 connections, want 1", n)
			}
			if f := p.Failed(route.Prod); f != 0 {
				t.Errorf("%d failed", f)
			}
		})
	}
}

// TestHTTP2StreamsBothWays streams a request body to an h2c instance
// while its answer streams back, line by line, through an HTTP/1.1
// client: each line comes back before the next is sent.
func TestHTTP2StreamsBothWays(t *testing.T) {
	in := newUpstreamInstance(t, "blue", "b1", H2C, nil, nil, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Lines")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		n := 0
		for sc.Scan() {
			n++
			io.WriteString(w, "echo "+sc.Text()+"\n")
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Lines", strings.Repeat("x", n))
	})
	p, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{RequestBuffer: -1}, in.inst)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, prod+"/stream", pr)
	done := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			errc <- err
			return
		}
		done <- resp
	}()
	io.WriteString(pw, "one\n")
	var resp *http.Response
	select {
	case resp = <-done:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("no response head while the request body streams")
	}
	br := bufio.NewReader(resp.Body)
	for _, line := range []string{"one", "two", "three"} {
		if line != "one" {
			io.WriteString(pw, line+"\n")
		}
		got, err := br.ReadString('\n')
		if err != nil || got != "echo "+line+"\n" {
			t.Fatalf("got %q, %v, want the echo of %s before the next line is sent", got, err, line)
		}
	}
	pw.Close()
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("more after the last echo: %q", rest)
	}
	resp.Body.Close()
	if got := resp.Trailer.Get("X-Lines"); got != "xxx" {
		t.Errorf("trailer X-Lines: %q, want xxx", got)
	}
	if f := p.Failed(route.Prod); f != 0 || in.inst.InFlight(route.Prod) != 0 {
		t.Errorf("%d failed, %d in flight", f, in.inst.InFlight(route.Prod))
	}
}

// TestHTTPSInstanceSendingMoreThanItsAnswer: an HTTPS instance that sends,
// in a TLS record of its own right after its answer, a second answer
// nobody asked for: the connection is not reused, so no request reads
// it as its own.
func TestHTTPSInstanceSendingMoreThanItsAnswer(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				bc := &batchConn{Conn: raw}
				c := tls.Server(bc, conf)
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					// Two TLS records in one TCP write: vipswap's TLS
					// layer reads both, the socket holds nothing more.
					bc.hold = true
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!")
					bc.flush()
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	inst := route.NewInstance("blue", ln.Addr().String())
	_, prod := proxyWith(t, &Upstream{Protocol: HTTP1, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "f"}, Options{}, inst)
	for i := range 20 {
		if code, body := get(t, prod); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q, want the instance's own answer", i, code, body)
		}
	}
}

// batchConn holds what is written while hold is set, for flush to send in
// one write.
type batchConn struct {
	net.Conn
	hold bool
	buf  []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *batchConn) flush() {
	c.hold = false
	c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
}

// TestH2SlotWhoseInstanceSpeaksOnlyHTTP1: an instance that does not agree
// to HTTP/2 by ALPN never gets the request; it fails as a dial does.
func TestH2SlotWhoseInstanceSpeaksOnlyHTTP1(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	in := newUpstreamInstance(t, "blue", "b1", HTTP1, &cert, nil, nil)
	p, prod := proxyWith(t, &Upstream{Protocol: H2, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "g"},
		Options{Hold: 50 * time.Millisecond}, in.inst)
	if code, body := get(t, prod); code != http.StatusBadGateway {
		t.Fatalf("%d %q, want 502", code, body)
	}
	if in.hits.Load() != 0 || p.Failed(route.Prod) != 1 {
		t.Errorf("hits %d, failed %d: want 0 and 1", in.hits.Load(), p.Failed(route.Prod))
	}
}

// TestHTTP2ExpectContinue: an HTTP/1.1 client that waits for "100
// Continue" before its (streamed) body gets it, and its body reaches the
// h2c instance, which may answer before reading it.
func TestHTTP2ExpectContinue(t *testing.T) {
	in := newUpstreamInstance(t, "blue", "b1", H2C, nil, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, fmt.Sprint(len(b)))
	})
	_, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{RequestBuffer: -1}, in.inst)
	body := strings.Repeat("y", 100<<10)
	status, got := raw(t, prod, "PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 102400\r\n\r\n"+body)
	if status != "200 OK" || got != "102400" {
		t.Fatalf("got %s %q, want 200 and the body's length", status, got)
	}
	status, _ = raw(t, prod, "PUT /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 102400\r\nConnection: close\r\n\r\n"+body)
	if status != "413 Request Entity Too Large" {
		t.Fatalf("early answer: got %s, want 413", status)
	}
}

// TestTLSHandshakeWithinConnectTimeout: an instance that accepts the TCP
// connection and never answers the handshake holds a request no longer
// than the connect timeout, and the request, which it never saw, goes to
// the other instance: none fails.
func TestTLSHandshakeWithinConnectTimeout(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // silent: the handshake never ends
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	for _, proto := range []Protocol{HTTP1, H2} {
		t.Run(string(proto), func(t *testing.T) {
			good := newUpstreamInstance(t, "blue", "good", proto, &cert, nil, nil)
			silent := route.NewInstance("blue", ln.Addr().String())
			p, prod := proxyWith(t, &Upstream{Protocol: proto, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "h"},
				Options{ConnectTimeout: time.Second}, silent, good.inst)
			for range 6 {
				if code, body := get(t, prod); code != 200 || body != "good" {
					t.Fatalf("%d %q, want the good instance's answer", code, body)
				}
			}
			if f := p.Failed(route.Prod); f != 0 {
				t.Errorf("%d failed", f)
			}
		})
	}
}

// TestHTTP2HeadTimeoutCountsFromTheRequestsEnd: the response head is due
// within response_header_timeout of the request's end: a client that
// streams its body slowly for longer than that still gets the answer.
func TestHTTP2HeadTimeoutCountsFromTheRequestsEnd(t *testing.T) {
	in := newUpstreamInstance(t, "blue", "b1", H2C, nil, nil, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, fmt.Sprint(len(b)))
	})
	p, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{ResponseHeaderTimeout: 300 * time.Millisecond, RequestBuffer: -1}, in.inst)
	pr, pw := io.Pipe()
	go func() {
		defer pw.Close()
		for range 6 {
			pw.Write([]byte("0123456789"))
			time.Sleep(100 * time.Millisecond) // a slow client: 600 ms in all
		}
	}()
	req, _ := http.NewRequest(http.MethodPost, prod+"/", pr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "60" {
		t.Fatalf("%d %q, want 200 60", resp.StatusCode, b)
	}
	if f := p.Failed(route.Prod); f != 0 {
		t.Errorf("%d failed", f)
	}
}

// TestH2WithoutTLSUsesTheSystemRoots: protocol h2 without a TLS config is
// still TLS, verified against the system's roots: a self-signed instance
// is not trusted, and never gets the request.
func TestH2WithoutTLSUsesTheSystemRoots(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "127.0.0.1")
	in := newUpstreamInstance(t, "blue", "b1", H2, &cert, nil, nil)
	p, prod := proxyWith(t, &Upstream{Protocol: H2}, Options{Hold: 50 * time.Millisecond}, in.inst)
	if code, body := get(t, prod); code != http.StatusBadGateway {
		t.Fatalf("%d %q, want 502", code, body)
	}
	if in.hits.Load() != 0 || p.Failed(route.Prod) != 1 {
		t.Errorf("hits %d, failed %d: want 0 and 1", in.hits.Load(), p.Failed(route.Prod))
	}
}

// TestTLSSlotWhoseInstanceSpeaksCleartext: an instance that answers the
// ClientHello in cleartext HTTP (a slot given tls by mistake) fails the
// handshake: the request goes to the instance that speaks TLS, and none
// fails.
func TestTLSSlotWhoseInstanceSpeaksCleartext(t *testing.T) {
	dir := t.TempDir()
	cert := tlstest.Valid(t, dir, "app.internal")
	plain := newInstance(t, "blue", "plain", nil)
	good := newUpstreamInstance(t, "blue", "good", HTTP1, &cert, nil, nil)
	p, prod := proxyWith(t, &Upstream{Protocol: HTTP1, TLS: &tls.Config{RootCAs: cert.Pool(), ServerName: "app.internal"}, Fingerprint: "i"},
		Options{}, plain.inst, good.inst)
	for range 6 {
		if code, body := get(t, prod); code != 200 || body != "good" {
			t.Fatalf("%d %q, want the TLS instance's answer", code, body)
		}
	}
	if plain.hits.Load() != 0 || p.Failed(route.Prod) != 0 {
		t.Errorf("the cleartext instance served %d, %d failed: want 0 and 0", plain.hits.Load(), p.Failed(route.Prod))
	}
}

// TestHTTP2InstanceGetsNoForbiddenTrailers: a client's request trailers
// reach an HTTP/2 instance as they reach an HTTP/1.1 one: without the pin
// header (which is never forwarded) and without the fields vipswap sets
// itself (X-Forwarded-*, Via), which a client would forge there; its
// other trailers pass.
func TestHTTP2InstanceGetsNoForbiddenTrailers(t *testing.T) {
	got := make(chan http.Header, 1)
	in := newUpstreamInstance(t, "blue", "b1", H2C, nil, nil, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Clone()
		io.WriteString(w, "ok")
	})
	_, prod := proxyWith(t, &Upstream{Protocol: H2C}, Options{RequestBuffer: -1, PinHeader: "X-Vipswap-Slot"}, in.inst)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, prod+"/t", pr)
	names := []string{"X-Vipswap-Slot", "X_vipswap_slot", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via", "X-Sum"}
	req.Trailer = http.Header{}
	for _, n := range names {
		req.Trailer[n] = nil
	}
	go func() {
		io.WriteString(pw, "body")
		for _, n := range names {
			req.Trailer[n] = []string{"forged"}
		}
		pw.Close()
	}()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	tr := <-got
	if tr.Get("X-Sum") != "forged" {
		t.Errorf("the instance lost the trailer X-Sum: %v", tr)
	}
	for _, n := range names[:len(names)-1] {
		if v, ok := tr[http.CanonicalHeaderKey(n)]; ok {
			t.Errorf("the instance got the trailer %s: %q", n, v)
		}
	}
}
