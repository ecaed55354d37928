package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// splitTable routes prod blue 80 %, green 20 %, stage to green, with an
// affinity key and a route /beta/ → green.
func splitTable(blue, green []*route.Instance) *route.Table {
	var spec route.Spec
	spec.Revision = 1
	spec.Listeners[route.Prod] = []route.Weighted{{Slot: "blue", Weight: 80}, {Slot: "green", Weight: 20}}
	spec.Listeners[route.Stage] = []route.Weighted{{Slot: "green", Weight: 1}}
	spec.Routable = map[string][]*route.Instance{"blue": blue, "green": green}
	spec.Routes = []route.Route{{PathPrefix: "/beta/", Slot: "green"}}
	spec.AffinityKey = []byte("a key of sixteen bytes or more")
	spec.Watch = []string{"/checkout"}
	return route.Build(spec)
}

// headers answers with the request's header names and the pin's values,
// then its trailers.
func headers(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	io.WriteString(w, strings.Join(r.Header.Values("X-Vipswap-Slot"), ",")+"|")
	for k := range r.Header {
		io.WriteString(w, k+" ")
	}
	for k, v := range r.Trailer {
		io.WriteString(w, "trailer "+k+": "+strings.Join(v, ",")+" ")
	}
}

// A pin header that is empty or repeated is the client's mistake: a 400
// that says so, counted as a client error and never as failed; the pin
// header never reaches an instance, on prod or stage.
func TestPinIsTheClientsClaim(t *testing.T) {
	blue := newInstance(t, "blue", "blue", headers)
	green := newInstance(t, "green", "green", headers)
	p := New(Options{PinHeader: "x-vipswap-slot"})
	p.Apply(splitTable([]*route.Instance{blue.inst}, []*route.Instance{green.inst}))
	prod, stage := serve(t, p)
	for _, c := range []struct{ name, head, want string }{
		{"empty", "X-Vipswap-Slot: \r\n", "X-Vipswap-Slot is empty"},
		{"repeated", "X-Vipswap-Slot: green\r\nX-Vipswap-Slot: blue\r\n", "X-Vipswap-Slot appears 2 times"},
		{"empty then named", "X-Vipswap-Slot: \r\nX-Vipswap-Slot: green\r\n", "X-Vipswap-Slot appears 2 times"},
		{"unknown", "X-Vipswap-Slot: purple\r\n", `names slot "purple", which does not exist`},
	} {
		status, body := raw(t, prod, "GET /x HTTP/1.1\r\nHost: x\r\n"+c.head+"Connection: close\r\n\r\n")
		if !strings.HasPrefix(status, "400") || !strings.Contains(body, c.want) {
			t.Errorf("%s pin: %s %q, want 400 saying %q", c.name, status, body, c.want)
		}
	}
	for _, base := range []string{prod, stage} {
		status, body := raw(t, base, "GET /x HTTP/1.1\r\nHost: x\r\nX-Vipswap-Slot: green\r\nX_Vipswap_Slot: red\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(status, "200") || strings.Contains(strings.ToLower(body), "vipswap") || !strings.HasPrefix(body, "|") {
			t.Errorf("pinned request on %s: %s %q; want 200 and no pin header at the instance", base, status, body)
		}
	}
	// Nor as a trailer of a chunked body.
	status, body := raw(t, stage, "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Vipswap-Slot\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\nX-Vipswap-Slot: red\r\n\r\n")
	if !strings.HasPrefix(status, "200") || strings.Contains(body, "red") {
		t.Errorf("a pin sent as a trailer: %s %q; want it kept from the instance", status, body)
	}
	var failed, clientErrors uint64
	for _, c := range p.Counters(route.Prod) {
		failed += c.Failed
		clientErrors += c.ClientErrors
	}
	if failed != 0 || clientErrors != 4 || p.Failed(route.Prod) != 0 {
		t.Fatalf("%d failed (Failed %d), %d client errors; want 0 failed and the 4 bad pins as client errors", failed, p.Failed(route.Prod), clientErrors)
	}
}

// A malformed request that never reaches the handler counts as a client
// error of its listener.
func TestMalformedRequestIsAClientError(t *testing.T) {
	prod, _, p := proxyTo(t, echo)
	status, _ := raw(t, prod, "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
	if !strings.HasPrefix(status, "400") {
		t.Fatalf("conflicting lengths: %s, want 400", status)
	}
	c := p.Counters(route.Prod)[route.NoSlot]
	if c.ClientErrors != 1 || c.Failed != 0 || c.Classes[4] != 1 {
		t.Fatalf("counts %+v; want one client error, 0 failed", c)
	}
}

// Only a cookie vipswap signed keeps a client on a slot: a cookie naming
// green that a client made up is drawn by weight like a new client's (and
// replaced by a signed one); one vipswap issued holds. Requests a pin or a
// route sent are steered, not judged; the others are judged, by source
// and watched path.
func TestJudgedAndSteered(t *testing.T) {
	blue := newInstance(t, "blue", "blue", nil)
	green := newInstance(t, "green", "green", nil)
	p := New(Options{PinHeader: "X-Vipswap-Slot", Affinity: Affinity{Cookie: "vipswap_slot"}})
	tab := splitTable([]*route.Instance{blue.inst}, []*route.Instance{green.inst})
	p.Apply(tab)
	prod, _ := serve(t, p)
	hc := &http.Client{}
	send := func(path, cookie, pin string) (string, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, prod+path, nil)
		if cookie != "" {
			req.Header.Set("Cookie", "vipswap_slot="+cookie)
		}
		if pin != "" {
			req.Header.Set("X-Vipswap-Slot", pin)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		set := ""
		for _, c := range resp.Cookies() {
			set = c.Value
		}
		return string(b), set
	}
	const n = 500
	forged := 0
	for range n {
		slot, set := send("/x", "green", "")
		if slot == "green" {
			forged++
		}
		if set != tab.AffinityValue(slot) {
			t.Fatalf("a forged cookie got %q from %s, want the signed %q", set, slot, tab.AffinityValue(slot))
		}
	}
	if forged > n*30/100 {
		t.Fatalf("%d of %d requests with a forged green cookie reached green, want about 20%% (by weight)", forged, n)
	}
	for range 50 {
		if slot, set := send("/checkout/pay", tab.AffinityValue("green"), ""); slot != "green" || set != "" {
			t.Fatalf("a signed green cookie reached %s (new cookie %q)", slot, set)
		}
		if slot, _ := send("/x", "", "green"); slot != "green" {
			t.Fatalf("pinned to green, reached %s", slot)
		}
		if slot, _ := send("/beta/x", "", ""); slot != "green" {
			t.Fatalf("routed to green, reached %s", slot)
		}
	}
	c := p.Counters(route.Prod)["green"]
	if c.Steered.Requests != 100 {
		t.Fatalf("green counted %d steered requests, want the 100 pinned and routed", c.Steered.Requests)
	}
	if want := uint64(forged + 50); c.Judged.Requests != want || c.Requests() != want+100 {
		t.Fatalf("green judged %d of %d requests, want %d of %d", c.Judged.Requests, c.Requests(), want, want+100)
	}
	if c.Judged.PathTally(0).Requests != 50 {
		t.Fatalf("green judged %d requests under /checkout, want 50", c.Judged.PathTally(0).Requests)
	}
	groups := 0
	for _, s := range c.Judged.Sources {
		if s.Requests > 0 {
			groups++
			if s.Requests != c.Judged.Requests {
				t.Fatalf("sources %+v: one client's requests in several groups", c.Judged.Sources)
			}
		}
	}
	if groups != 1 {
		t.Fatalf("one client's judged requests fell into %d source groups", groups)
	}
}

// The instances' latency runs from the request written whole to the
// response head: a client that sends its body slowly, or reads its
// answer slowly, moves the total it sees, never the latency an analysis
// judges.
func TestLatencyIsTheInstances(t *testing.T) {
	big := strings.Repeat("x", 4<<20)
	prod, _, p := proxyTo(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, "ok")
	})
	addr := strings.TrimPrefix(prod, "http://")

	// A body of 10 bytes, one every 300 ms: the slow clients take seconds,
	// so that a busy machine's pause in the instance's own time does not
	// come near half of theirs.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
	tick := time.NewTicker(300 * time.Millisecond)
	for range 10 {
		<-tick.C
		c.Write([]byte("a"))
	}
	tick.Stop()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)

	// 4 MiB read 64 KiB every 50 ms.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.(*net.TCPConn).SetReadBuffer(64 << 10)
	io.WriteString(c2, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	buf := make([]byte, 64<<10)
	tick = time.NewTicker(50 * time.Millisecond)
	got := 0
	for got < len(big) {
		<-tick.C
		n, err := c2.Read(buf)
		got += n
		if err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()

	// The answers are counted once the handler returns.
	var counts route.Counts
	vstest.WaitFor(t, 10*time.Second, func() error {
		counts = p.Counters(route.Prod)["blue"]
		return expect(counts.Requests() == 2)
	})
	total := counts.Total.Quantile(1)
	latency := counts.Latency.Quantile(1)
	response := counts.Response.Quantile(1)
	t.Logf("slowest: client-facing %s, instance latency %s, instance response %s", total, latency, response)
	if total < 2900*time.Millisecond {
		t.Fatalf("the client-facing total is %s, want the slow client's 3 s at least", total)
	}
	if 2*latency >= total || 2*response >= total {
		t.Fatalf("the instance latency is %s (response %s) of the client's %s: the slow client's time counted as the instance's", latency, response, total)
	}
}

// Clients count by network: the addresses of one IPv4 /24 or one IPv6 /56
// are one source; other networks (mostly) another.
func TestSourceGroups(t *testing.T) {
	same := [][]string{
		{"127.0.9.1:4000", "127.0.9.200:5000", "[::ffff:127.0.9.7]:1"},
		{"[2001:db8:0:ab::1]:443", "[2001:db8:0:ac:1:2:3:4]:80"},
	}
	for _, set := range same {
		for _, a := range set[1:] {
			if sourceGroup(a) != sourceGroup(set[0]) {
				t.Errorf("%s and %s are in different source groups", set[0], a)
			}
		}
	}
	groups := map[int]bool{}
	for i := range 16 {
		groups[sourceGroup(fmt.Sprintf("10.%d.0.1:80", i))] = true
	}
	if len(groups) < 8 {
		t.Errorf("16 networks fell into %d source groups", len(groups))
	}
}

// A client that sends its request and then shuts its side of the
// connection (half-close) never gets an answer vipswap made up: either
// the instance's, or none (the connection closes); never an empty 200.
func TestHalfClosedClientGetsNoMadeUpAnswer(t *testing.T) {
	prod, _, _ := proxyTo(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(500 * time.Millisecond) // a slow instance, not synchronisation
		w.Header().Set("X-From", "instance")
		io.WriteString(w, "done")
	})
	for range 3 {
		c, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
		c.(*net.TCPConn).CloseWrite()
		all, _ := io.ReadAll(c)
		c.Close()
		if len(all) > 0 && !strings.Contains(string(all), "X-From: instance") {
			t.Fatalf("a half-closed client got %q: an answer that is not the instance's", all)
		}
	}
}

// impatientInstance is an instance with its own read and write timeouts,
// as many applications set them: it gives up on a request whose head and
// body take longer than read to arrive, and on an answer of size bytes
// that takes longer than write to go out.
func impatientInstance(t *testing.T, read, write time.Duration, size int) *route.Instance {
	t.Helper()
	answer := strings.Repeat("x", size)
	return route.NewInstance("blue", vstest.Serve(t, func(c net.Conn) {
		c.(*net.TCPConn).SetWriteBuffer(16 << 10)
		c.SetReadDeadline(time.Now().Add(read))
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return // gave up waiting for the body
		}
		c.SetWriteDeadline(time.Now().Add(write))
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", size, answer)
	}))
}

// trickle sends a request with a body of n bytes, one every gap, on a new
// connection, and returns the status line it gets (or the error).
func trickle(t *testing.T, prod string, n int, gap time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", n)
	tick := time.NewTicker(gap)
	defer tick.Stop()
	for range n {
		<-tick.C
		if _, err := c.Write([]byte("x")); err != nil {
			break // vipswap gave up on the body
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return resp.Status
}

// A client that sends its body slowly cannot make an instance give up on
// it and have that counted against the slot: a small body is read whole
// before any instance is picked (and must arrive within
// client_read_timeout in all, however steadily it trickles); a larger one
// that the instance gives up on is the client's 408.
func TestSlowClientsAreTheirOwnFault(t *testing.T) {
	t.Run("a small body is buffered", func(t *testing.T) {
		inst := impatientInstance(t, 300*time.Millisecond, time.Second, 2)
		prod, p := proxyOf(t, Options{}, inst)
		if got := trickle(t, prod, 10, 100*time.Millisecond); !strings.HasPrefix(got, "200") {
			t.Fatalf("a body sent over 1 s to an instance that waits 300 ms: %s, want 200", got)
		}
		if c := p.Counters(route.Prod)["blue"]; p.Failed(route.Prod) != 0 || c.Errors() != 0 {
			t.Fatalf("failed %d, errors %d; want none", p.Failed(route.Prod), c.Errors())
		}
	})
	t.Run("a buffered body is due whole", func(t *testing.T) {
		inst := impatientInstance(t, time.Minute, time.Second, 2)
		prod, p := proxyOf(t, Options{ClientReadTimeout: 500 * time.Millisecond}, inst)
		if got := trickle(t, prod, 100, 100*time.Millisecond); !strings.HasPrefix(got, "408") {
			t.Fatalf("a body trickling a byte every 100 ms, due whole within 500 ms: %s, want 408", got)
		}
		if c := p.Counters(route.Prod)["blue"]; p.Failed(route.Prod) != 0 || c.ClientErrors != 1 {
			t.Fatalf("failed %d, client errors %d; want 0 and 1", p.Failed(route.Prod), c.ClientErrors)
		}
	})
	t.Run("a streamed body the instance gave up on", func(t *testing.T) {
		inst := impatientInstance(t, 300*time.Millisecond, time.Second, 2)
		prod, p := proxyOf(t, Options{RequestBuffer: 4}, inst)
		if got := trickle(t, prod, 20, 100*time.Millisecond); !strings.HasPrefix(got, "408") {
			t.Fatalf("a streamed body sent over 2 s to an instance that waits 300 ms: %s, want 408", got)
		}
		if c := p.Counters(route.Prod)["blue"]; p.Failed(route.Prod) != 0 || c.Errors() != 0 || c.ClientErrors != 1 {
			t.Fatalf("failed %d, errors %d, client errors %d; want 0, 0, 1", p.Failed(route.Prod), c.Errors(), c.ClientErrors)
		}
	})
	t.Run("a slow reader", func(t *testing.T) {
		// 8 MiB, more than the socket buffers on the way hold (vipswap's
		// to the client are kept small, as a busy server's would be): the
		// instance must wait for the client to read, and gives up after 1 s.
		inst := impatientInstance(t, time.Minute, time.Second, 8<<20)
		p := New(Options{})
		p.Apply(table(1, []*route.Instance{inst}, nil))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go p.Serve(route.Prod, smallSendBuffers{ln})
		defer p.Shutdown(context.Background())
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		pause := time.NewTimer(3 * time.Second) // the client reads nothing for 3 s
		<-pause.C
		c.SetDeadline(time.Now().Add(60 * time.Second))
		io.Copy(io.Discard, c) // then all it gets, until the answer breaks off
		var counts route.Counts
		vstest.WaitFor(t, 10*time.Second, func() error {
			counts = p.Counters(route.Prod)["blue"]
			return expect(counts.Requests() == 1)
		})
		if p.Failed(route.Prod) != 0 || counts.Errors() != 0 || counts.ClientErrors != 1 {
			t.Fatalf("failed %d, errors %d, client errors %d; want the broken-off answer put down to the slow client", p.Failed(route.Prod), counts.Errors(), counts.ClientErrors)
		}
	})
}

// smallSendBuffers is a listener whose connections send through a 16 KiB
// socket buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}
