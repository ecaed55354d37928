package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/proxy/proxyproto"
	"github.com/vipswap/vipswap/route"
)

type ppConnKey struct{}

// proxiedInstance is an instance that requires a PROXY header from
// loopback and answers each request with the client the header of its
// connection named; conns counts its connections.
func proxiedInstance(t *testing.T, slot string, conns *atomic.Int64) *route.Instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, Mode: proxyproto.Require,
		Trusted: proxyproto.TrustList([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			conns.Add(1)
			return context.WithValue(ctx, ppConnKey{}, c)
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			pc := r.Context().Value(ppConnKey{}).(*proxyproto.Conn)
			fmt.Fprintf(w, "v%d %s", pc.Header().Version, pc.RemoteAddr())
		}),
	}
	go srv.Serve(pl)
	t.Cleanup(func() { srv.Close() })
	return route.NewInstance(slot, ln.Addr().String())
}

// TestSendProxyProtocol: a slot set to send the PROXY header names each
// request's own client to the instance, v1 and v2, on a connection of its
// own: two clients taking turns never see each other's address; a slot
// without it keeps pooling.
func TestSendProxyProtocol(t *testing.T) {
	for _, version := range []int{1, 2} {
		var conns atomic.Int64
		inst := proxiedInstance(t, "blue", &conns)
		p := New(Options{SendProxyProtocol: map[string]int{"blue": version}})
		p.Apply(table(1, []*route.Instance{inst}, []*route.Instance{inst}))
		prod, _ := serve(t, p)
		clients := map[string]*http.Client{}
		for _, from := range []string{"127.0.0.2", "127.0.0.3"} {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			clients[from] = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
		}
		const rounds = 5
		for range rounds {
			for from, c := range clients {
				resp, err := c.Get(prod)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := fmt.Sprintf("v%d %s:", version, from)
				if len(body) < len(want) || string(body[:len(want)]) != want {
					t.Fatalf("v%d: the client from %s: the instance saw %q", version, from, body)
				}
			}
		}
		if got := conns.Load(); got < 2*rounds {
			t.Errorf("v%d: %d requests on %d instance connections: a connection that named one client carried another's request", version, 2*rounds, got)
		}
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}
}

// TestSendProxyProtocolUnderConcurrency: clients from several addresses at
// once each get their own address back, every time.
func TestSendProxyProtocolUnderConcurrency(t *testing.T) {
	var conns atomic.Int64
	inst := proxiedInstance(t, "blue", &conns)
	p := New(Options{SendProxyProtocol: map[string]int{"blue": 2}})
	p.Apply(table(1, []*route.Instance{inst}, []*route.Instance{inst}))
	prod, _ := serve(t, p)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 2; i < 10; i++ {
		from := fmt.Sprintf("127.0.0.%d", i)
		wg.Go(func() {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
			defer c.CloseIdleConnections()
			for range 20 {
				resp, err := c.Get(prod)
				if err != nil {
					failed.Add(1)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := "v2 " + from + ":"; len(body) < len(want) || string(body[:len(want)]) != want {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed or named another client, want 0", n)
	}
}

// TestReceivedProxyHeaderIsTheClient: behind a listener that takes the
// PROXY header, the header's client is the request's client on the whole
// request path: the X-Forwarded-For the instance gets and the access log's
// client (the measurement's source grouping reads the same RemoteAddr).
func TestReceivedProxyHeaderIsTheClient(t *testing.T) {
	b := newInstance(t, "blue", "b1", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	})
	var logs safeBuffer
	p := New(Options{AccessLog: &AccessLog{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Sample: 1}})
	p.Apply(table(1, []*route.Instance{b.inst}, []*route.Instance{b.inst}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{Listener: ln, Mode: proxyproto.Require,
		Trusted: proxyproto.TrustList([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})}
	go p.Serve(route.Prod, pl)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only ends a hung shutdown
		defer cancel()
		p.Shutdown(ctx)
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "PROXY TCP4 198.51.100.77 10.0.0.1 4242 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "198.51.100.77" {
		t.Errorf("the instance got X-Forwarded-For %q, want the header's client", body)
	}
	if !strings.Contains(logs.String(), "client=198.51.100.77:4242") {
		t.Errorf("the access log does not name the header's client: %s", logs.String())
	}
}

// safeBuffer is a log's output, read by the test.
type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
