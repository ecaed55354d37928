package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// dialFrom opens a connection to addr from the local address from (another
// 127.x address is another client), with a deadline on everything it does.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 30 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// closed reports whether the server closed c (EOF or reset) within wait.
// Bytes it sends are read and dropped.
func closed(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// victim is another client: an http.Client from 127.0.0.1 whose requests
// give up after timeout, and counts of what it got.
type victim struct {
	client       *http.Client
	url          string
	ok, failures atomic.Int64
	mu           sync.Mutex
	first        error
}

func newVictim(addr string, timeout time.Duration) *victim {
	return &victim{
		client: &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}},
		url:    "http://" + addr + "/victim",
	}
}

// get sends one request and reports whether it was answered 200.
func (v *victim) get() bool {
	err := func() error {
		resp, err := v.client.Get(v.url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}()
	if err != nil {
		v.failures.Add(1)
		v.mu.Lock()
		if v.first == nil {
			v.first = err
		}
		v.mu.Unlock()
		return false
	}
	v.ok.Add(1)
	return true
}

// run sends n requests one after the other, then n from each of parallel
// clients at once; each stops at its first failure (so a test that fails
// does not wait out every timeout).
func (v *victim) run(n, parallel int) {
	for range n {
		if !v.get() {
			break
		}
	}
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for range n {
				if !v.get() {
					return
				}
			}
		})
	}
	wg.Wait()
	v.client.CloseIdleConnections()
}

func (v *victim) check(t *testing.T) {
	t.Helper()
	if n := v.failures.Load(); n > 0 {
		t.Fatalf("the other client: %d failed requests (first: %v), %d answered; want 0 failed", n, v.first, v.ok.Load())
	}
	t.Logf("the other client: %d requests answered, 0 failed", v.ok.Load())
}

var ok200 = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

// TestIdleFloodAtTheLimit: an attacker holds as many idle keep-alive
// connections as the server's limit, from several addresses. The server
// closes the ones idle the longest to admit new clients, so another client
// gets every answer; whether the idle connections are parked or wait on
// their goroutines.
func TestIdleFloodAtTheLimit(t *testing.T) {
	for _, park := range []bool{true, false} {
		name := "parked"
		if !park {
			name = "waiting on their goroutines"
		}
		t.Run(name, func(t *testing.T) {
			const limit = 50
			s, addr := start(t, &Server{Handler: ok200, MaxConns: limit, noParking: !park})
			if park && s.parker == nil {
				t.Skip("no parking on this system")
			}
			var attacker []net.Conn
			for i := range limit {
				c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i%4), addr)
				io.WriteString(c, "GET /attacker HTTP/1.1\r\nHost: x\r\n\r\n")
				if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
					t.Fatalf("attacker connection %d: %v", i, err)
				}
				attacker = append(attacker, c)
			}
			vstest.WaitFor(t, 5*time.Second, func() error {
				if n := s.Conns(); n != limit {
					return fmt.Errorf("%d connections held, want %d", n, limit)
				}
				if park {
					return parked(s, limit)
				}
				return nil
			})

			// Without reclaiming, the other client's connections wait for
			// a slot that never frees (idle timeout 120 s): its generous
			// timeout ends that wait, it does not time the answers.
			v := newVictim(addr, 30*time.Second)
			v.run(20, 8)
			v.check(t)
			// Every connection reclaimed was one of the attacker's (a dial
			// of the other client's may still be landing: wait for it).
			gone := map[net.Conn]bool{}
			vstest.WaitFor(t, 5*time.Second, func() error {
				for _, c := range attacker {
					if !gone[c] && closed(c, time.Millisecond) {
						gone[c] = true
					}
				}
				if n := s.Reclaimed(); n == 0 || uint64(len(gone)) != n {
					return fmt.Errorf("%d attacker connections closed, %d counted as reclaimed: want the same, above 0", len(gone), n)
				}
				return nil
			})
			t.Logf("%d of the attacker's %d idle connections were closed to admit the other client", len(gone), limit)
		})
	}
}

// TestPartialHeadIsNotReclaimed: at the limit, a connection that has sent
// part of a request head is in the middle of a request: it is not closed
// to admit a new client. Once its request has been answered it is idle,
// and the next client takes its place.
func TestPartialHeadIsNotReclaimed(t *testing.T) {
	const limit = 3
	s, addr := start(t, &Server{Handler: ok200, MaxConns: limit, ReadHeaderTimeout: 10 * time.Second})
	var slow []net.Conn
	for i := range limit {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i), addr)
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHo")
		slow = append(slow, c)
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := s.Conns(); n != limit {
			return fmt.Errorf("%d connections held, want %d", n, limit)
		}
		return nil
	})
	newcomer := dialFrom(t, "127.0.0.1", addr)
	io.WriteString(newcomer, "GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(newcomer)
	newcomer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := br.Peek(1); err == nil {
		t.Fatal("the new client was answered while every connection was in the middle of a head")
	}
	// One slow client finishes its head: answered, it is idle, and the
	// waiting client takes its place.
	io.WriteString(slow[0], "st: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(slow[0]), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the finished head: %v %v", resp, err)
	}
	newcomer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the new client: %v %v", resp, err)
	}
	if !closed(slow[0], 10*time.Second) {
		t.Fatal("the idle connection was not closed for the new client")
	}
	for i, c := range slow[1:] {
		if closed(c, time.Millisecond) {
			t.Fatalf("slow connection %d, in the middle of its head, was closed", i+1)
		}
	}
	if n := s.Reclaimed(); n != 1 {
		t.Fatalf("%d connections reclaimed, want 1", n)
	}
}

// trickle sends a request head that never ends, one byte every interval,
// until the server closes the connection or limit has passed; it returns
// how long the server let it trickle from its first byte, and whether it
// closed the connection.
func trickle(c net.Conn, every, limit time.Duration) (time.Duration, bool) {
	c.SetWriteDeadline(time.Time{}) // writes go on until limit: closed sets the reads'
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		closed(c, limit+time.Second)
	}()
	head := []byte("GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	tick := time.NewTicker(every)
	defer tick.Stop()
	first := time.Now()
	for i := 0; time.Since(first) < limit; i++ {
		b := byte('a')
		if i < len(head) {
			b = head[i]
		}
		c.Write([]byte{b})
		select {
		case <-gone:
			return time.Since(first), true
		case <-tick.C:
		}
	}
	return time.Since(first), false
}

// TestHeadDeadlineIsTotal: a request head must arrive whole within
// ReadHeaderTimeout of its first byte, however the client spreads its
// bytes: sending one now and then does not extend it. The first request,
// and a later one on a connection that has parked or not.
func TestHeadDeadlineIsTotal(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s, addr := start(t, &Server{Handler: ok200, ReadHeaderTimeout: timeout})
	check := func(t *testing.T, c net.Conn) {
		// A deadline that each byte extended would never close it: the
		// limit only ends that wait.
		took, ok := trickle(c, 20*time.Millisecond, time.Minute)
		if !ok {
			t.Fatalf("a head trickled for %s (read_header_timeout %s) and the connection is still open", took, timeout)
		}
		t.Logf("closed %s after the head's first byte (read_header_timeout %s)", took.Round(time.Millisecond), timeout)
	}
	t.Run("first request", func(t *testing.T) { check(t, dialFrom(t, "127.0.0.1", addr)) })
	for _, park := range []bool{false, true} {
		t.Run(fmt.Sprintf("later request, parked %v", park), func(t *testing.T) {
			if park && s.parker == nil {
				t.Skip("no parking on this system")
			}
			c := dialFrom(t, "127.0.0.1", addr)
			io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
			if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
				t.Fatal(err)
			}
			if park {
				vstest.WaitFor(t, 5*time.Second, func() error { return parked(s, 1) })
			}
			check(t, c)
		})
	}
}

// TestSlowlorisWaveIsBoundedPerClient: one address opens twice as many
// connections as the server's limit and sends request heads a byte at a
// time. The per-client cap admits a few and closes the rest at once, the
// admitted ones are closed by the head deadline however they trickle, and
// another client gets every answer meanwhile: before any admitted one is
// closed.
func TestSlowlorisWaveIsBoundedPerClient(t *testing.T) {
	// The head deadline is long enough that the other client's answers
	// come before it on a busy machine too; what is checked is the order.
	const limit, perClient, timeout = 30, 10, 10 * time.Second
	var notices atomic.Int64
	s, addr := start(t, &Server{Handler: ok200, MaxConns: limit, ReadHeaderTimeout: timeout,
		MaxConnsPerClient: perClient, Notice: func(string) { notices.Add(1) }})
	type result struct {
		took         time.Duration
		closed       bool
		afterAnswers bool // closed once the other client had all its answers
	}
	var answered atomic.Bool
	results := make(chan result, 2*limit)
	for range 2 * limit {
		c := dialFrom(t, "127.0.0.2", addr)
		go func() {
			took, ok := trickle(c, 100*time.Millisecond, timeout+time.Minute)
			results <- result{took, ok, answered.Load()}
		}()
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := s.Refused(); n != 2*limit-perClient {
			return fmt.Errorf("%d connections refused, want %d", n, 2*limit-perClient)
		}
		return nil
	})
	// Without the cap, the wave would hold every connection until the
	// head deadline closed it: the other client would be answered only
	// after that, which the order of events below shows.
	v := newVictim(addr, timeout+time.Minute)
	v.run(10, perClient-4)
	answered.Store(true)
	v.check(t)
	var longest time.Duration
	held := 0
	for range 2 * limit {
		r := <-results
		if !r.closed {
			t.Fatalf("a slow head trickled for %s (read_header_timeout %s) and is still open", r.took, timeout)
		}
		if r.afterAnswers {
			held++
		}
		longest = max(longest, r.took)
	}
	if held < perClient {
		t.Fatalf("only %d slow connections were still open when the other client had all its answers, want the %d admitted", held, perClient)
	}
	t.Logf("every slow connection closed; the last after %s; notices %d", longest.Round(time.Millisecond), notices.Load())
}

// admitted sends a request on c and reports whether it was answered (true)
// or the connection closed without an answer (false).
func admitted(t *testing.T, c net.Conn) bool {
	t.Helper()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("neither answered nor closed: %v", err)
		}
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// busy makes c's connection busy: a request head begun and not finished,
// which no limit reclaims.
func busy(c net.Conn) { io.WriteString(c, "GET / HTTP/1.1\r\nHo") }

// TestPerClientCap: the connection beyond a client's cap, whose every
// connection is busy, is closed at once, counted and logged, while another
// address is admitted; once the client has closed one, it may open
// another. Changing the cap (Tune) applies to the next connection.
func TestPerClientCap(t *testing.T) {
	var mu sync.Mutex
	var notices []string
	s, addr := start(t, &Server{Handler: ok200, MaxConnsPerClient: 3, Notice: func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, msg)
	}})
	var held []net.Conn
	for i := range 3 {
		c := dialFrom(t, "127.0.0.2", addr)
		if !admitted(t, c) {
			t.Fatalf("connection %d of 3 refused", i+1)
		}
		busy(c)
		held = append(held, c)
		vstest.WaitFor(t, 10*time.Second, func() error {
			if n := s.busyOf(netip.MustParseAddr("127.0.0.2")); n != i+1 {
				return fmt.Errorf("127.0.0.2 holds %d connections in use, want %d", n, i+1)
			}
			return nil
		})
	}
	waitReading(t, s, "127.0.0.2", 3)
	began := time.Now()
	for i := range 3 {
		if admitted(t, dialFrom(t, "127.0.0.2", addr)) {
			t.Fatalf("connection %d beyond the cap admitted", i+1)
		}
	}
	// The client may see the close before the server has counted it.
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := s.Refused(); n != 3 {
			return fmt.Errorf("%d refusals counted, want 3", n)
		}
		return nil
	})
	mu.Lock()
	got := slices.Clone(notices)
	mu.Unlock()
	if len(got) == 0 || !strings.Contains(got[0], "127.0.0.2") || len(got) > 1+int(time.Since(began)/time.Second) {
		t.Fatalf("notices %q: want the address, at most one a second", got)
	}
	other := dialFrom(t, "127.0.0.3", addr)
	if !admitted(t, other) {
		t.Fatal("another address was refused")
	}
	busy(other)
	held[0].Close()
	vstest.WaitFor(t, 5*time.Second, func() error {
		if n := s.clientConns("127.0.0.2"); n != 2 {
			return fmt.Errorf("127.0.0.2 holds %d connections, want 2", n)
		}
		return nil
	})
	again := dialFrom(t, "127.0.0.2", addr)
	if !admitted(t, again) {
		t.Fatal("a new connection after one closed was refused")
	}
	busy(again)
	// Tune changes the cap for the next connections; those held stay.
	s.Tune(Limits{MaxConnsPerClient: 2})
	if admitted(t, dialFrom(t, "127.0.0.2", addr)) {
		t.Fatal("a client holding 3 connections was admitted under a cap of 2")
	}
	third := dialFrom(t, "127.0.0.3", addr)
	if !admitted(t, third) {
		t.Fatal("under a cap of 2, a client holding 1 connection must get one more")
	}
	busy(third)
	// The server counts third in use once it has seen its head begin (a
	// moment after the bytes are sent: between the read that takes them
	// and the connection's change of state, it is neither).
	vstest.WaitFor(t, 10*time.Second, func() error {
		if n := s.busyOf(netip.MustParseAddr("127.0.0.3")); n != 2 {
			return fmt.Errorf("127.0.0.3 holds %d connections in use, want 2", n)
		}
		return nil
	})
	if admitted(t, dialFrom(t, "127.0.0.3", addr)) {
		t.Fatal("under a cap of 2, a client holding 2 busy connections got a third")
	}
	s.Tune(Limits{}) // no cap
	if !admitted(t, dialFrom(t, "127.0.0.2", addr)) {
		t.Fatal("refused with no cap")
	}
}

// TestPerClientCapUnderConcurrency: clients from three addresses open and
// close connections at once, more than their cap; every connection is
// either answered or closed at once, and when all have closed the server
// holds no count for any client.
func TestPerClientCapUnderConcurrency(t *testing.T) {
	const perClient = 4
	s, addr := start(t, &Server{Handler: ok200, MaxConns: 20, MaxConnsPerClient: perClient})
	var answered, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 3 {
		from := fmt.Sprintf("127.0.0.%d", 2+i)
		for range 3 * perClient {
			wg.Go(func() {
				for range 10 {
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
					c, err := d.Dial("tcp", addr)
					if err != nil {
						t.Error(err)
						return
					}
					c.SetDeadline(time.Now().Add(10 * time.Second))
					io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
					if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode == 200 {
						answered.Add(1)
					} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
						t.Errorf("neither answered nor closed: %v", err)
					} else {
						refused.Add(1)
					}
					c.Close()
				}
			})
		}
	}
	wg.Wait()
	t.Logf("%d answered, %d refused", answered.Load(), refused.Load())
	if answered.Load() == 0 || uint64(refused.Load()) != s.Refused() {
		t.Fatalf("%d answered, %d refused, the server counted %d refusals", answered.Load(), refused.Load(), s.Refused())
	}
	vstest.WaitFor(t, 5*time.Second, func() error {
		s.clientsMu.Lock()
		defer s.clientsMu.Unlock()
		if len(s.clients) != 0 {
			return fmt.Errorf("counts left: %v", s.clients)
		}
		return nil
	})
}

// TestClientKey: IPv4 clients by address, IPv6 ones by /64 (one host's
// share of a subnet), an IPv4-mapped address as the IPv4 one.
func TestClientKey(t *testing.T) {
	key := func(s string) string { return clientKey(netip.MustParseAddrPort(s).Addr()).String() }
	for _, c := range [][2]string{
		{"192.0.2.1:1000", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:1000", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:1000", "2001:db8:1:2::"},
		{"[2001:db8:1:2:ffff::1%eth0]:1000", "2001:db8:1:2::"},
		{"[::1]:1000", "::"},
	} {
		if got := key(c[0]); got != c[1] {
			t.Errorf("clientKey(%s) = %s, want %s", c[0], got, c[1])
		}
	}
}

// clientConns returns how many connections the server counts for the
// client at addr.
func (s *Server) clientConns(addr string) int {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	return s.clients[clientKey(netip.MustParseAddr(addr))]
}

// TestPerClientCapCountsConnectionsInUse: the cap is on connections in
// use: a client whose pool keeps idle keep-alive connections beside its
// requests (an HTTP client's often grows past its concurrency) may open
// more, all answered and none closed for it; only a client whose
// connections are all in use (a slow head counts) is refused.
func TestPerClientCapCountsConnectionsInUse(t *testing.T) {
	s, addr := start(t, &Server{Handler: ok200, MaxConnsPerClient: 3})
	var conns []net.Conn
	for i := range 8 {
		c := dialFrom(t, "127.0.0.2", addr)
		if !admitted(t, c) {
			t.Fatalf("connection %d of a client whose others are idle was refused", i+1)
		}
		conns = append(conns, c)
	}
	if n := s.Refused(); n != 0 {
		t.Fatalf("%d refused, want 0", n)
	}
	for _, c := range conns { // all still open and usable
		if !admitted(t, c) {
			t.Fatal("an idle connection of the client was closed")
		}
	}
	for _, c := range conns[:3] {
		busy(c)
	}
	waitReading(t, s, "127.0.0.2", 3)
	if admitted(t, dialFrom(t, "127.0.0.2", addr)) {
		t.Fatal("a client with 3 connections in use (its cap) got another")
	}
}

// waitReading waits until n connections of client are reading a request
// (their goroutine has its first bytes).
func waitReading(t *testing.T, s *Server, client string, n int) {
	t.Helper()
	key := clientKey(netip.MustParseAddr(client))
	vstest.WaitFor(t, 10*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		got := 0
		for c := range s.conns {
			if c.client == key && c.state.Load() == stateActive {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d connections of %s reading a request, want %d", got, client, n)
		}
		return nil
	})
}
