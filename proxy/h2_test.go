package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/tlstest"
	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// serveH2 serves p's prod listener with HTTP/2: over TLS (ALPN h2) when
// secure, else h2c with prior knowledge. It returns prod's base URL and
// an HTTP/2 client of it.
func serveH2(t *testing.T, p *Proxy, secure bool) (string, *http.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Protocols: new(http.Protocols)}
	url := "https://" + ln.Addr().String()
	if secure {
		cert := tlstest.Valid(t, t.TempDir(), "127.0.0.1")
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"h2", "http/1.1"}})
		tr.TLSClientConfig = &tls.Config{RootCAs: cert.Pool()}
		tr.Protocols.SetHTTP2(true)
	} else {
		url = "http://" + ln.Addr().String()
		tr.Protocols.SetUnencryptedHTTP2(true) // prior knowledge
	}
	served := make(chan error, 1)
	go func() { served <- p.ServeWith(route.Prod, ln, Protocols{HTTP2: true, H2C: !secure}) }()
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only ends a hung shutdown
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return url, &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func bothH2(t *testing.T, f func(t *testing.T, secure bool)) {
	for _, secure := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "h2c"}[secure], func(t *testing.T) { f(t, secure) })
	}
}

// TestH2ToHTTP1Instance: an HTTP/2 request reaches an HTTP/1.1 instance
// as HTTP/1.1: :authority as Host, X-Forwarded-Proto https over TLS, a
// body of unknown length chunked with its trailer, no connection-specific
// header; the instance's answer comes back with its trailer, and the
// affinity cookie is Secure over TLS.
func TestH2ToHTTP1Instance(t *testing.T) {
	bothH2(t, func(t *testing.T, secure bool) {
		type seen struct {
			proto, host, body, trailer string
			te                         []string
			header                     http.Header
		}
		saw := make(chan seen, 1)
		in := newInstance(t, "blue", "b1", func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			saw <- seen{r.Proto, r.Host, string(body), r.Trailer.Get("X-Sum"), r.TransferEncoding, r.Header.Clone()}
			w.Header().Set("Trailer", "X-Done")
			io.WriteString(w, "answer")
			w.Header().Set("X-Done", "yes")
		})
		var spec route.Spec
		spec.Listeners[route.Prod] = []route.Weighted{{Slot: "blue", Weight: 1}}
		spec.Routable = map[string][]*route.Instance{"blue": {in.inst}}
		spec.AffinityKey = []byte("0123456789abcdef0123456789abcdef")
		p := New(Options{Affinity: Affinity{Cookie: "slot"}})
		p.Apply(route.Build(spec))
		url, c := serveH2(t, p, secure)

		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", url+"/up?q=1", pr)
		req.Host = "shop.example"
		req.Trailer = http.Header{"X-Sum": nil}
		go func() {
			io.WriteString(pw, "hello ")
			req.Trailer.Set("X-Sum", "7")
			io.WriteString(pw, "world")
			pw.Close()
		}()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "answer" || resp.ProtoMajor != 2 {
			t.Fatalf("answered %s %d %q", resp.Proto, resp.StatusCode, b)
		}
		if got := resp.Trailer.Get("X-Done"); got != "yes" {
			t.Errorf("the instance's trailer reached the client as %q", got)
		}
		cookie := resp.Header.Get("Set-Cookie")
		if !strings.HasPrefix(cookie, "slot=") || strings.Contains(cookie, "Secure") != secure {
			t.Errorf("affinity cookie %q (over TLS: %v)", cookie, secure)
		}
		s := <-saw
		proto := map[bool]string{true: "https", false: "http"}[secure]
		if s.proto != "HTTP/1.1" || s.host != "shop.example" || s.body != "hello world" || s.trailer != "7" ||
			len(s.te) != 1 || s.te[0] != "chunked" || s.header.Get("X-Forwarded-Proto") != proto ||
			s.header.Get("X-Forwarded-Host") != "shop.example" || s.header.Get("Connection") != "" {
			t.Fatalf("the instance saw %+v", s)
		}
	})
}

// TestH2SwapWithOpenStreams: streams open on one HTTP/2 connection when
// prod swaps finish on their old slot (and count in flight there, as a
// drain sees them); new streams on the same connection go to the new
// slot. No request fails.
func TestH2SwapWithOpenStreams(t *testing.T) {
	bothH2(t, func(t *testing.T, secure bool) {
		release := make(chan struct{})
		blue := newInstance(t, "blue", "b1", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			io.WriteString(w, "b1")
		})
		green := newInstance(t, "green", "g1", nil)
		p := New(Options{})
		p.Apply(table(1, []*route.Instance{blue.inst}, []*route.Instance{green.inst}))
		url, c := serveH2(t, p, secure)

		const open = 10
		var wg sync.WaitGroup
		var failed atomic.Int32
		for range open {
			wg.Go(func() {
				if status, body := h2get(c, url+"/slow"); status != 200 || body != "b1" {
					t.Errorf("a stream open across the swap: %d %q", status, body)
					failed.Add(1)
				}
			})
		}
		vstest.WaitFor(t, 30*time.Second, func() error {
			if n := blue.inst.InFlight(route.Prod); n != open {
				return fmt.Errorf("%d streams in flight on blue", n)
			}
			return nil
		})
		p.Apply(table(2, []*route.Instance{green.inst}, []*route.Instance{blue.inst}))
		for range 20 {
			if status, body := h2get(c, url+"/new"); status != 200 || body != "g1" {
				t.Fatalf("a stream after the swap: %d %q, want g1", status, body)
			}
		}
		if n := blue.inst.InFlight(route.Prod); n != open {
			t.Fatalf("blue counts %d streams in flight after the swap, want %d", n, open)
		}
		close(release)
		wg.Wait()
		if failed.Load() != 0 {
			t.Fatalf("%d requests failed", failed.Load())
		}
		if n := p.Conns(route.Prod); n != 1 {
			t.Fatalf("prod holds %d connections, want the one HTTP/2 connection", n)
		}
	})
}

func h2get(c *http.Client, url string) (int, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 {
		return 0, resp.Proto
	}
	return resp.StatusCode, string(b)
}

// TestH2ResetCancelsTheAttempt: a client that resets its stream
// (RST_STREAM) ends the request to the instance: its context ends, and
// the instance counts nothing in flight.
func TestH2ResetCancelsTheAttempt(t *testing.T) {
	bothH2(t, func(t *testing.T, secure bool) {
		gone := make(chan struct{})
		in := newInstance(t, "blue", "b1", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/ping" {
				io.WriteString(w, "pong")
				return
			}
			for {
				if _, err := io.WriteString(w, "chunk\n"); err != nil {
					break
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					close(gone)
					return
				case <-time.After(5 * time.Millisecond): // the instance's pace
				}
			}
		})
		p := New(Options{})
		p.Apply(table(1, []*route.Instance{in.inst}, nil))
		url, c := serveH2(t, p, secure)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/stream", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		cancel() // RST_STREAM
		resp.Body.Close()
		select {
		case <-gone:
		case <-time.After(30 * time.Second):
			t.Fatal("the instance's request went on after the client reset its stream")
		}
		vstest.WaitFor(t, 30*time.Second, func() error {
			if n := in.inst.InFlight(route.Prod); n != 0 {
				return fmt.Errorf("%d requests still in flight", n)
			}
			return nil
		})
		// The connection goes on.
		if status, body := h2get(c, url+"/ping"); status != 200 || body != "pong" {
			t.Fatalf("after a reset: %d %q", status, body)
		}
	})
}

// TestH2ShutdownFinishesStreams: Shutdown sends GOAWAY, lets the stream
// in flight finish through the instance, and waits for it.
func TestH2ShutdownFinishesStreams(t *testing.T) {
	bothH2(t, func(t *testing.T, secure bool) {
		started, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		in := newInstance(t, "blue", "b1", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				once.Do(func() { close(started) })
				<-release
			}
			io.WriteString(w, "finished")
		})
		p := New(Options{})
		p.Apply(table(1, []*route.Instance{in.inst}, nil))
		url, c := serveH2(t, p, secure)
		type result struct {
			status int
			body   string
		}
		res := make(chan result, 1)
		go func() { s, b := h2get(c, url+"/slow"); res <- result{s, b} }()
		<-started
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			shut <- p.Shutdown(ctx)
		}()
		vstest.WaitFor(t, 30*time.Second, func() error {
			if status, _ := h2get(c, url+"/"); status == 200 {
				return fmt.Errorf("a new stream was served during shutdown")
			}
			return nil
		})
		select {
		case err := <-shut:
			t.Fatalf("shutdown returned (%v) with a stream in flight", err)
		default:
		}
		close(release)
		if r := <-res; r.status != 200 || r.body != "finished" {
			t.Fatalf("the stream in flight: %d %q", r.status, r.body)
		}
		if err := <-shut; err != nil {
			t.Fatal(err)
		}
	})
}
