package h1

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
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
)

// startH2 serves s on a new listener, over TLS offering h2 and http/1.1
// by ALPN when secure, and returns its address and the certificate pool
// that trusts it (nil for cleartext).
func startH2(t *testing.T, s *Server, secure bool) (string, *x509.CertPool) {
	t.Helper()
	if !secure {
		_, addr := start(t, s)
		return addr, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.init()
	cert := tlstest.Valid(t, t.TempDir(), "127.0.0.1")
	tlsLn := NewTLSListener(ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"h2", "http/1.1"}})
	served := make(chan error, 1)
	go func() { served <- s.Serve(tlsLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only ends a hung shutdown
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return ln.Addr().String(), cert.Pool()
}

// h2Client returns an HTTP/2 client of addr: over TLS trusting pool, or
// cleartext with prior knowledge when pool is nil. Its connections close
// with the test.
func h2Client(t *testing.T, pool *x509.CertPool) (*http.Client, string) {
	t.Helper()
	tr, scheme := h2Transport(pool), "https"
	if pool == nil {
		scheme = "http"
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, scheme
}

// h2Transport returns a client transport that speaks HTTP/2 only: over
// TLS trusting pool, or cleartext with prior knowledge when pool is nil.
func h2Transport(pool *x509.CertPool) *http.Transport {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, Protocols: new(http.Protocols)}
	if pool == nil {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP2(true)
	}
	return tr
}

// get sends a request and returns its status and body, or an error.
func get(c *http.Client, method, url string, body io.Reader) (int, string, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.ProtoMajor != 2 {
		return 0, "", fmt.Errorf("answered in %s", resp.Proto)
	}
	return resp.StatusCode, string(b), nil
}

// h2echo answers with what it saw of the request: its protocol, TLS,
// host, length and body, and a trailer.
var h2echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/refused" {
		w.Header().Set("Connection", "close") // as the proxy answers a client's mistake
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.Header().Set("Trailer", "X-Sum")
	fmt.Fprintf(w, "%s %s %s tls=%v host=%s len=%d body=%s trailer=%q", r.Proto, r.Method, r.RequestURI,
		r.TLS != nil, r.Host, r.ContentLength, body, r.Trailer.Get("X-Sum"))
	w.Header().Set("X-Sum", "42")
})

// TestH2 serves HTTP/2 over TLS (ALPN) and cleartext (prior knowledge):
// the handler sees each stream as a request, with the connection's TLS
// state and the :authority as Host; a body of unknown length and its
// trailers arrive; a response's trailers reach the client; many streams
// share one connection, which counts as one; HTTP/1.1 still works on the
// same listener.
func TestH2(t *testing.T) {
	for _, secure := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "h2c"}[secure], func(t *testing.T) {
			s := &Server{Handler: h2echo, HTTP2: true, H2C: !secure}
			addr, pool := startH2(t, s, secure)
			c, scheme := h2Client(t, pool)
			url := scheme + "://" + addr

			status, body, err := get(c, "GET", url+"/a?b=1", nil)
			if err != nil || status != 200 {
				t.Fatalf("GET: %d %v", status, err)
			}
			want := fmt.Sprintf("HTTP/2.0 GET /a?b=1 tls=%v host=%s len=0 body= trailer=\"\"", secure, addr)
			if body != want {
				t.Fatalf("GET saw %q, want %q", body, want)
			}

			// A body of unknown length, with a trailer.
			pr, pw := io.Pipe()
			req, _ := http.NewRequest("POST", url+"/up", pr)
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
			if want := "len=-1 body=hello world trailer=\"7\""; !strings.Contains(string(b), want) {
				t.Fatalf("POST saw %q, want %q", b, want)
			}
			if got := resp.Trailer.Get("X-Sum"); got != "42" {
				t.Fatalf("response trailer %q, want 42", got)
			}

			// Streams in parallel share the connection.
			var wg sync.WaitGroup
			var failed atomic.Int32
			for i := range 50 {
				wg.Go(func() {
					if status, body, err := get(c, "PUT", fmt.Sprintf("%s/%d", url, i), strings.NewReader("x")); err != nil || status != 200 || !strings.Contains(body, "body=x") {
						failed.Add(1)
					}
				})
			}
			wg.Wait()
			if failed.Load() != 0 {
				t.Fatalf("%d of 50 parallel requests failed", failed.Load())
			}
			if n := s.Conns(); n != 1 {
				t.Fatalf("the server holds %d connections, want the one HTTP/2 connection", n)
			}
			// A refusal with Connection: close ends its stream, not the
			// connection.
			if status, _, err := get(c, "GET", url+"/refused", nil); err != nil || status != 400 {
				t.Fatalf("refused: %d %v", status, err)
			}
			if status, _, err := get(c, "GET", url+"/after", nil); err != nil || status != 200 {
				t.Fatalf("after a refusal: %d %v", status, err)
			}
			if n := s.nextID.Load(); n != 1 {
				t.Fatalf("%d connections accepted, want the one HTTP/2 connection throughout", n)
			}

			// HTTP/1.1 on the same listener.
			h1c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
			defer h1c.CloseIdleConnections()
			resp, err = h1c.Get(url + "/one")
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 1 || !strings.HasPrefix(string(b), "HTTP/1.1 GET /one") {
				t.Fatalf("HTTP/1.1 beside HTTP/2: %s %q", resp.Proto, b)
			}
		})
	}
}

// TestH2COff: without H2C, a cleartext preface is a malformed HTTP/1.1
// request; with it, short HTTP/1.1 requests are still HTTP/1.1, and a
// client that sends part of the preface and stops is a slow head.
func TestH2COff(t *testing.T) {
	_, addr := start(t, &Server{Handler: h2echo, HTTP2: true})
	c, br := dial(t, addr)
	io.WriteString(c, clientPreface)
	if resp, _ := read(t, br, "PRI"); resp.StatusCode < 400 {
		t.Fatalf("the preface without h2c was answered %d", resp.StatusCode)
	}

	s := &Server{Handler: h2echo, H2C: true, ReadHeaderTimeout: 300 * time.Millisecond}
	_, addr = start(t, s)
	c, br = dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n") // shorter than the preface
	if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || !strings.HasPrefix(body, "HTTP/1.0 GET /") {
		t.Fatalf("a short HTTP/1.0 request on an h2c listener: %d %q", resp.StatusCode, body)
	}
	c, _ = dial(t, addr)
	io.WriteString(c, clientPreface[:10])
	if !closed(c, 30*time.Second) {
		t.Fatal("a connection that sent half the preface was kept past ReadHeaderTimeout")
	}
}

// TestH2Shutdown: Shutdown sends a GOAWAY on HTTP/2 connections, lets the
// stream in flight finish, and returns once the connection closed; the
// client's next request does not go on that connection.
func TestH2Shutdown(t *testing.T) {
	for _, secure := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "h2c"}[secure], func(t *testing.T) {
			started, release := make(chan struct{}), make(chan struct{})
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					close(started)
					<-release
				}
				io.WriteString(w, "done")
			})
			s := &Server{Handler: handler, HTTP2: true, H2C: !secure}
			addr, pool := startH2(t, s, secure)
			c, scheme := h2Client(t, pool)
			url := scheme + "://" + addr
			if status, _, err := get(c, "GET", url+"/fast", nil); err != nil || status != 200 {
				t.Fatalf("GET: %d %v", status, err)
			}
			type result struct {
				body string
				err  error
			}
			slow := make(chan result, 1)
			go func() {
				_, body, err := get(c, "GET", url+"/slow", nil)
				slow <- result{body, err}
			}()
			<-started
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				shut <- s.Shutdown(ctx)
			}()
			// The GOAWAY reached the client: its next request cannot use
			// the connection (and the listener is closed).
			vstest.WaitFor(t, 30*time.Second, func() error {
				if _, _, err := get(c, "GET", url+"/fast", nil); err == nil {
					return errors.New("a new request was still served")
				}
				return nil
			})
			select {
			case err := <-shut:
				t.Fatalf("shutdown returned (%v) with a stream in flight", err)
			default:
			}
			close(release)
			if r := <-slow; r.err != nil || r.body != "done" {
				t.Fatalf("the stream in flight at shutdown: %q %v", r.body, r.err)
			}
			if err := <-shut; err != nil {
				t.Fatalf("shutdown: %v", err)
			}
		})
	}
}

// TestH2IdleReclaimedAtMaxConns: at MaxConns, an idle HTTP/2 connection
// gives its place to a new client (by a GOAWAY), as an idle HTTP/1.1 one
// does; one with a stream open is never taken.
func TestH2IdleReclaimedAtMaxConns(t *testing.T) {
	release, slowBegan := make(chan struct{}), make(chan struct{}, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowBegan <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	s := &Server{Handler: handler, H2C: true, MaxConns: 2}
	addr, _ := startH2(t, s, false)
	busy, _ := h2Client(t, nil)
	idle, _ := h2Client(t, nil)
	url := "http://" + addr
	slow := make(chan error, 1)
	go func() { _, _, err := get(busy, "GET", url+"/slow", nil); slow <- err }()
	if _, _, err := get(idle, "GET", url+"/", nil); err != nil {
		t.Fatal(err)
	}
	vstest.WaitFor(t, 30*time.Second, func() error {
		if n := s.Conns(); n != 2 {
			return fmt.Errorf("%d connections", n)
		}
		return nil
	})
	// The busy connection's stream is open (it was idle a moment before
	// it came, and could have been the one reclaimed).
	<-slowBegan
	// A third client (HTTP/1.1) gets the idle one's place.
	c, br := dial(t, addr)
	io.WriteString(c, "GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := read(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("the third client: %d %q", resp.StatusCode, body)
	}
	if s.Reclaimed() != 1 {
		t.Fatalf("reclaimed %d, want 1", s.Reclaimed())
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("the busy HTTP/2 connection's stream: %v", err)
	}
}

// TestH2StalledBody: a stream whose body stops coming fails the
// handler's read with a *BodyError 408 after BodyReadTimeout, as over
// HTTP/1.1; the connection goes on.
func TestH2StalledBody(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		var be *BodyError
		if errors.As(err, &be) {
			w.WriteHeader(be.Status)
			return
		}
		io.WriteString(w, "ok")
	})
	s := &Server{Handler: handler, H2C: true, BodyReadTimeout: 300 * time.Millisecond}
	addr, _ := startH2(t, s, false)
	c, _ := h2Client(t, nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, "the start of a body that stops")
	req, _ := http.NewRequest("POST", "http://"+addr+"/stall", pr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("a stalled body: %d, want 408", resp.StatusCode)
	}
	if status, body, err := get(c, "GET", "http://"+addr+"/", nil); err != nil || status != 200 || body != "ok" {
		t.Fatalf("after: %d %q %v", status, body, err)
	}
}

// readCounting counts the reads from the connections its listener accepts.
type readCounting struct {
	net.Listener
	reads atomic.Int64
}

func (l *readCounting) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedReads{Conn: c, n: &l.reads}, nil
}

type countedReads struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedReads) Read(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Read(p)
}

// TestH2CReadsAFrameAtOnce: on a cleartext HTTP/2 connection a frame that
// arrived whole is read whole, header and payload in one read (x/net
// reads them apart: two system calls a frame without a buffer).
func TestH2CReadsAFrameAtOnce(t *testing.T) {
	s := &Server{Handler: h2echo, H2C: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &readCounting{Listener: ln}
	served := make(chan error, 1)
	go func() { served <- s.Serve(counted) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only ends a hung shutdown
		defer cancel()
		s.Shutdown(ctx)
		<-served
	})
	c, scheme := h2Client(t, nil)
	const requests = 100
	for range requests {
		if status, _, err := get(c, "GET", scheme+"://"+ln.Addr().String()+"/", nil); err != nil || status != 200 {
			t.Fatalf("GET: %d %v", status, err)
		}
	}
	// Each request is a HEADERS frame the client writes at once; the
	// preface, SETTINGS and their acknowledgements come on top.
	if n := counted.reads.Load(); n > requests*3/2 {
		t.Fatalf("%d reads for %d requests of one frame each: the frames' headers and payloads are read apart", n, requests)
	}
	t.Logf("%d reads for %d requests", counted.reads.Load(), requests)
}

// TestH2Date: an HTTP/2 answer whose handler set no Date carries the
// current time (vipswap formats it once a second for every stream), and
// one that set a Date keeps it, over many streams of one connection.
func TestH2Date(t *testing.T) {
	const kept = "Mon, 02 Jan 2006 15:04:05 GMT"
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/dated" {
			w.Header().Set("Date", kept)
		}
		w.Write([]byte("ok"))
	})
	s := &Server{Handler: h, H2C: true}
	addr, _ := startH2(t, s, false)
	c, _ := h2Client(t, nil)
	for i := range 20 {
		before := time.Now().Truncate(time.Second)
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		after := time.Now()
		if got := resp.Header.Values("Date"); len(got) != 1 {
			t.Fatalf("request %d: Date fields %q, want one", i, got)
		}
		d, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil {
			t.Fatalf("request %d: Date %q: %v", i, resp.Header.Get("Date"), err)
		}
		if d.Before(before) || d.After(after) {
			t.Fatalf("request %d: Date %v, not between %v and %v", i, d, before, after)
		}
		resp, err = c.Get("http://" + addr + "/dated")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Values("Date"); len(got) != 1 || got[0] != kept {
			t.Fatalf("request %d: Date %q, want the handler's %q", i, got, kept)
		}
	}
}

// TestH2DateIsSharedSafely: streams of many connections at once get their
// Date from the one shared value while handlers add to and replace their
// own Date after the head went (as a handler may, in vain): each answer
// carries one valid Date, and what a handler did reaches no other stream
// (under -race: no write to the shared value).
func TestH2DateIsSharedSafely(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
		hdr := w.Header()
		hdr.Add("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		hdr["Date"] = append(hdr["Date"], "junk")
		hdr.Set("Date", "junk")
	})
	s := &Server{Handler: h, H2C: true}
	addr, _ := startH2(t, s, false)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			c, _ := h2Client(t, nil)
			for range 25 {
				v := dateField()
				_ = append(v, "junk") // a copy: the shared value has no room
				resp, err := c.Get("http://" + addr + "/")
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				got := resp.Header.Values("Date")
				if len(got) != 1 {
					errs <- fmt.Errorf("Date fields %q, want one", got)
					return
				}
				if _, err := http.ParseTime(got[0]); err != nil {
					errs <- fmt.Errorf("Date %q: %v", got[0], err)
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
	if v := dateField(); len(v) != 1 || cap(v) != 1 {
		t.Errorf("the shared Date value %q has length %d, capacity %d; want 1 and 1", v, len(v), cap(v))
	}
}
