package writebehind

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
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

// TestJoinsWhatIsWrittenDuringASend: what is written while a
// send is on its way leaves with the next send, in order, in one write.
func TestJoinsWhatIsWrittenDuringASend(t *testing.T) {
	server, client := tcpPair(t)
	g := &heldWrites{Conn: server, entered: make(chan struct{}), release: make(chan struct{})}
	c := New(g, 10*time.Second)
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the first send is on its way, and held
	for _, p := range []string{"b", "cd", "efg", "h"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	close(g.release)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(client); got <- b }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "abcdefgh" {
		t.Fatalf("the client read %q, want %q", b, "abcdefgh")
	}
	if n := g.writes.Load(); n != 2 {
		t.Fatalf("%d writes to the connection, want 2: the four pieces written during the first send leave together", n)
	}
}

// TestCloseSendsWhatIsLeft: Close returns once every byte written
// before it has been sent.
func TestCloseSendsWhatIsLeft(t *testing.T) {
	server, client := tcpPair(t)
	c := New(server, 10*time.Second)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(client); got <- b }()
	var want bytes.Buffer
	piece := make([]byte, 1000)
	for i := range 2000 { // 2 MB: more than the socket buffers take at once
		for j := range piece {
			piece[j] = byte(i + j)
		}
		want.Write(piece)
		if _, err := c.Write(piece); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("the client read %d bytes, not the %d written in order", len(b), want.Len())
	}
}

// TestHoldsAtMostMaxPending: while a send is held, Write queues up
// to MaxPending bytes behind it and then waits, so a client that reads slowly does
// not make the server hold what is written without bound.
func TestHoldsAtMostMaxPending(t *testing.T) {
	server, client := tcpPair(t)
	go io.Copy(io.Discard, client)
	g := &heldWrites{Conn: server, entered: make(chan struct{}), release: make(chan struct{})}
	c := New(g, 10*time.Second)
	const piece, total = 1 << 10, 1 << 20
	var written atomic.Int64
	done := make(chan error, 1)
	go func() {
		p := make([]byte, piece)
		for written.Load() < total {
			if _, err := c.Write(p); err != nil {
				done <- err
				return
			}
			written.Add(piece)
		}
		done <- nil
	}()
	<-g.entered
	// The writer stops once MaxPending is queued behind the held send.
	vstest.WaitFor(t, 10*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.pending) < MaxPending {
			return fmt.Errorf("%d bytes queued, not MaxPending", len(c.pending))
		}
		return nil
	})
	// The held send took what was queued when it began (MaxPending at
	// most), and MaxPending more waits behind it.
	if w := written.Load(); w > 2*(MaxPending+piece) {
		t.Fatalf("%d bytes written while a send was held: Write should wait beyond MaxPending (%d) queued", w, MaxPending)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestGivesUpOnAClientThatDoesNotRead: a send that makes no progress for
// the timeout fails and closes the connection (its reader sees the end at
// once), later Writes fail with its error, and Close returns instead of
// waiting for the client.
func TestGivesUpOnAClientThatDoesNotRead(t *testing.T) {
	server, _ := tcpPair(t) // the client reads nothing
	c := New(server, 200*time.Millisecond)
	p := make([]byte, 16<<10)
	var err error
	for i := 0; i < 64<<10 && err == nil; i++ { // at most 1 GiB: the socket buffers fill long before
		_, err = c.Write(p)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a client that reads nothing: %v, want the write deadline's error", err)
	}
	if _, err := c.Write(p); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a Write after the failed send: %v, want its error again", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a Read after the failed send: %v, want the connection closed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Close after the failed send: %v, want the connection closed already", err)
	}
}

// tlsPair returns the two ends of a TLS connection on 127.0.0.1, its
// handshake done; wrap is given the server's TCP connection, beneath TLS.
func tlsPair(t *testing.T, wrap func(net.Conn) net.Conn) (server *tls.Conn, client *tls.Conn) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	rawServer, rawClient := tcpPair(t)
	server = tls.Server(wrap(rawServer), &tls.Config{Certificates: []tls.Certificate{cert}})
	client = tls.Client(rawClient, &tls.Config{InsecureSkipVerify: true})
	done := make(chan error, 1)
	go func() { done <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return server, client
}

// failedWrites is a real connection that counts the writes begun after
// one failed.
type failedWrites struct {
	net.Conn
	failed atomic.Bool
	after  atomic.Int32
}

func (f *failedWrites) Write(p []byte) (int, error) {
	if f.failed.Load() {
		f.after.Add(1)
	}
	n, err := f.Conn.Write(p)
	if err != nil {
		f.failed.Store(true)
	}
	return n, err
}

// TestGivesUpOnATLSClientThatDoesNotReadAtOnce: over TLS, a send that
// failed closes the socket without a close_notify alert, which the client
// that reads nothing would hold up for 5 s more (tls.Conn's Close), and
// which after a record cut short is garbage: nothing is written after the
// failed write.
func TestGivesUpOnATLSClientThatDoesNotReadAtOnce(t *testing.T) {
	var under *failedWrites
	server, _ := tlsPair(t, func(c net.Conn) net.Conn { under = &failedWrites{Conn: c}; return under })
	c := New(server, 200*time.Millisecond)
	p := make([]byte, 16<<10)
	var err error
	for i := 0; i < 64<<10 && err == nil; i++ {
		_, err = c.Write(p)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a TLS client that reads nothing: %v, want the write deadline's error", err)
	}
	if n := under.after.Load(); n != 0 {
		t.Fatalf("%d writes to the socket after the send failed (a close_notify alert behind a broken record)", n)
	}
	c.Close()
	if n := under.after.Load(); n != 0 {
		t.Fatalf("%d writes to the socket after Close of a connection whose send failed", n)
	}
}

// deadlines records the write deadlines set on a held connection.
type deadlines struct {
	*heldWrites
	mu  sync.Mutex
	set []time.Time
}

func (d *deadlines) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	d.set = append(d.set, t)
	d.mu.Unlock()
	return d.heldWrites.SetWriteDeadline(t)
}

// TestCloseKeepsTheSendsDeadline: Close during a send bounds what is left
// by the timeout, but never moves the deadline of the send on its way
// later: that send is still due within the timeout of its start.
func TestCloseKeepsTheSendsDeadline(t *testing.T) {
	server, client := tcpPair(t)
	go io.Copy(io.Discard, client)
	d := &deadlines{heldWrites: &heldWrites{Conn: server, entered: make(chan struct{}), release: make(chan struct{})}}
	c := New(d, time.Hour)
	if _, err := c.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	<-d.entered // the send is on its way, and held
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	vstest.WaitFor(t, 10*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closeBy == 0 {
			return errors.New("Close has not begun")
		}
		return nil
	})
	close(d.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.set) == 0 {
		t.Fatal("the send had no write deadline")
	}
	for _, later := range d.set[1:] {
		if later.After(d.set[0]) {
			t.Fatalf("Close moved the deadline of the send on its way from %v to %v", d.set[0], later)
		}
	}
}

// TestAbortEndsAStuckSend: Abort ends a send that waits on a client that
// reads nothing, and a Write waiting behind it, long before the timeout;
// Close then returns at once, and later Writes fail.
func TestAbortEndsAStuckSend(t *testing.T) {
	server, _ := tcpPair(t) // the client reads nothing
	c := New(server, time.Hour)
	var queued atomic.Int64
	wrote := make(chan error, 1)
	go func() {
		p := make([]byte, 16<<10)
		for i := 0; i < 64<<10; i++ { // at most 1 GiB: the socket buffers fill long before
			if _, err := c.Write(p); err != nil {
				wrote <- err
				return
			}
			queued.Add(int64(len(p)))
		}
		wrote <- nil
	}()
	// The writer waits once MaxPending is queued behind the stuck send.
	vstest.WaitFor(t, 30*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.pending) < MaxPending {
			return fmt.Errorf("%d bytes queued, %d waiting", queued.Load(), len(c.pending))
		}
		return nil
	})
	c.Abort()
	if err := <-wrote; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a Write waiting when Abort came: %v, want net.ErrClosed", err)
	}
	c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a Write after Abort: %v, want net.ErrClosed", err)
	}
}

// TestKeepsAClientThatReadsSlowly: a client that reads slowly, but reads,
// gets every byte of a send that takes it longer than the timeout: each
// 16 KiB of it has the timeout, as each of x/net's writes had.
func TestKeepsAClientThatReadsSlowly(t *testing.T) {
	server, client := tcpPair(t)
	// Small socket buffers: the send waits on the client's reading.
	server.(*net.TCPConn).SetWriteBuffer(4 << 10)
	client.(*net.TCPConn).SetReadBuffer(4 << 10)
	const timeout = time.Second
	c := New(server, timeout)
	const total = 256 << 10
	got := make(chan int, 1)
	go func() { // at most 5 KiB every 25 ms: the send takes seconds
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		buf := make([]byte, 5<<10)
		n := 0
		for range tick.C {
			k, err := io.ReadFull(client, buf[:min(len(buf), total-n)])
			n += k
			if err != nil || n >= total {
				got <- n
				return
			}
		}
	}()
	if _, err := c.Write(make([]byte, total)); err != nil { // one send
		t.Fatal(err)
	}
	if n := <-got; n != total {
		t.Fatalf("the client, reading slowly, read %d bytes of a send of %d (timeout %v)", n, total, timeout)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("Write after the client read everything: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
