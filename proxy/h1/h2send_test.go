package h1

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// tcpPair returns the two ends of a TCP connection on 127.0.0.1.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// heldWrites counts the writes to a real connection, and holds the first
// until released.
type heldWrites struct {
	net.Conn
	writes  atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (g *heldWrites) Write(p []byte) (int, error) {
	if g.writes.Add(1) == 1 {
		close(g.entered)
		<-g.release
	}
	return g.Conn.Write(p)
}

// TestH2SenderJoinsWhatIsWrittenDuringASend: what x/net writes while a
// send is on its way leaves with the next send, in order, in one write.
func TestH2SenderJoinsWhatIsWrittenDuringASend(t *testing.T) {
	server, client := tcpPair(t)
	g := &heldWrites{Conn: server, entered: make(chan struct{}), release: make(chan struct{})}
	s := newH2Sender(g, 10*time.Second)
	if _, err := s.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the first send is on its way, and held
	for _, p := range []string{"b", "cd", "efg", "h"} {
		if _, err := s.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	close(g.release)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(client); got <- b }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "abcdefgh" {
		t.Fatalf("the client read %q, want %q", b, "abcdefgh")
	}
	if n := g.writes.Load(); n != 2 {
		t.Fatalf("%d writes to the connection, want 2: the four pieces written during the first send leave together", n)
	}
}

// TestH2SenderCloseSendsWhatIsLeft: Close returns once every byte written
// before it has been sent.
func TestH2SenderCloseSendsWhatIsLeft(t *testing.T) {
	server, client := tcpPair(t)
	s := newH2Sender(server, 10*time.Second)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(client); got <- b }()
	var want bytes.Buffer
	piece := make([]byte, 1000)
	for i := range 2000 { // 2 MB: more than the socket buffers take at once
		for j := range piece {
			piece[j] = byte(i + j)
		}
		want.Write(piece)
		if _, err := s.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("the client read %d bytes, not the %d written in order", len(b), want.Len())
	}
}

// TestH2SenderHoldsAtMostH2SendMax: while a send is held, Write queues up
// to h2SendMax bytes behind it and then waits, so a client that reads slowly does
// not make the server hold what x/net writes without bound.
func TestH2SenderHoldsAtMostH2SendMax(t *testing.T) {
	server, client := tcpPair(t)
	go io.Copy(io.Discard, client)
	g := &heldWrites{Conn: server, entered: make(chan struct{}), release: make(chan struct{})}
	s := newH2Sender(g, 10*time.Second)
	const piece, total = 1 << 10, 1 << 20
	var written atomic.Int64
	done := make(chan error, 1)
	go func() {
		p := make([]byte, piece)
		for written.Load() < total {
			if _, err := s.Write(p); err != nil {
				done <- err
				return
			}
			written.Add(piece)
		}
		done <- nil
	}()
	<-g.entered
	// The writer stops once h2SendMax is queued behind the held send.
	vstest.WaitFor(t, 10*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.pending) < h2SendMax {
			return fmt.Errorf("%d bytes queued, not h2SendMax", len(s.pending))
		}
		return nil
	})
	// The held send took what was queued when it began (h2SendMax at
	// most), and h2SendMax more waits behind it.
	if w := written.Load(); w > 2*(h2SendMax+piece) {
		t.Fatalf("%d bytes written while a send was held: Write should wait beyond h2SendMax (%d) queued", w, h2SendMax)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestH2SenderGivesUpOnAClientThatDoesNotRead: a send that makes no
// progress for WriteTimeout fails, later Writes fail with it, and Close
// returns instead of waiting for the client.
func TestH2SenderGivesUpOnAClientThatDoesNotRead(t *testing.T) {
	server, _ := tcpPair(t) // the client reads nothing
	s := newH2Sender(server, 200*time.Millisecond)
	p := make([]byte, 16<<10)
	var err error
	for i := 0; i < 64<<10 && err == nil; i++ { // at most 1 GiB: the socket buffers fill long before
		_, err = s.Write(p)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a client that reads nothing: %v, want the write deadline's error", err)
	}
	if _, err := s.Write(p); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a Write after the failed send: %v, want its error again", err)
	}
	s.Close()
	if _, err := server.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close, the connection is not closed: %v", err)
	}
}

// TestH2ClientThatStopsReading: a client that opens its windows wide, asks
// for large answers and then reads nothing has its connection closed once
// a send has made no progress for WriteTimeout; a client beside it sees no
// failure.
func TestH2ClientThatStopsReading(t *testing.T) {
	forBoth(t, func(t *testing.T, secure bool) {
		s, addr, pool := hostileServer(t, secure)
		w := runWellBehaved(t, addr, pool)
		vstest.WaitFor(t, 10*time.Second, func() error {
			if w.ok.Load() == 0 {
				return errors.New("the well-behaved client has no answer yet")
			}
			return nil
		})
		before := s.Conns()
		var conn net.Conn
		var err error
		if pool != nil {
			conn, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		} else {
			conn, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fr := http2.NewFramer(conn, conn)
		io.WriteString(conn, http2.ClientPreface)
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		fr.WriteWindowUpdate(0, 1<<31-1-65535)
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/large"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		for i := range 10 { // 40 MiB asked for, nothing read
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: buf.Bytes(), EndStream: true, EndHeaders: true})
		}
		vstest.WaitFor(t, 10*time.Second, func() error {
			if n := s.Conns(); n <= before {
				return fmt.Errorf("%d connections open: the new one is not counted yet", n)
			}
			return nil
		})
		vstest.WaitFor(t, 30*time.Second, func() error {
			if n := s.Conns(); n > before {
				return fmt.Errorf("%d connections open, %d before the client that stopped reading", n, before)
			}
			return nil
		})
		w.check(t)
	})
}
