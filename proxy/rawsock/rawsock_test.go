//go:build linux

package rawsock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// pair returns the two ends of a TCP connection on 127.0.0.1, and an IO on
// the first.
func pair(t *testing.T) (*net.TCPConn, *IO, net.Conn) {
	t.Helper()
	peer, nc := vstest.TCPPair(t)
	tc := nc.(*net.TCPConn)
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Now().Add(time.Minute))
	peer.SetDeadline(time.Now().Add(time.Minute))
	return tc, New(rc, tc), peer
}

func TestReadAndWrite(t *testing.T) {
	_, s, peer := pair(t)
	peer.Write([]byte("hello"))
	buf := make([]byte, 64)
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read: %d %q %v, want hello", n, buf[:n], err)
	}
	if n, err := s.Write([]byte("world")); n != 5 || err != nil {
		t.Fatalf("Write: %d %v", n, err)
	}
	if _, err := io.ReadFull(peer, buf[:5]); err != nil || string(buf[:5]) != "world" {
		t.Fatalf("the peer read %q %v, want world", buf[:5], err)
	}
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Fatalf("an empty Read: %d %v", n, err)
	}
}

// Read ends as net.Conn's does: io.EOF when the peer closed, a timeout at
// the read deadline, net.ErrClosed once closed, the system's error (a
// reset) otherwise.
func TestReadEnds(t *testing.T) {
	t.Run("EOF", func(t *testing.T) {
		_, s, peer := pair(t)
		peer.Close()
		if _, err := s.Read(make([]byte, 8)); err != io.EOF {
			t.Fatalf("got %v, want io.EOF", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		tc, s, _ := pair(t)
		tc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := s.Read(make([]byte, 8))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want a timeout", err)
		}
		if !strings.HasPrefix(err.Error(), "read tcp ") {
			t.Fatalf("got %q, want it to read as net.Conn's (read tcp ...)", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		tc, s, _ := pair(t)
		done := make(chan error, 1)
		go func() { _, err := s.Read(make([]byte, 8)); done <- err }()
		tc.Close() // while Read waits, or before it began
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("got %v, want net.ErrClosed", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		_, s, peer := pair(t)
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close()
		_, err := s.Read(make([]byte, 8))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("got %v, want ECONNRESET", err)
		}
		// As net.Conn's: "read tcp LOCAL->REMOTE: read: connection reset by peer".
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || oe.Source == nil || oe.Addr == nil {
			t.Fatalf("got %v, want a *net.OpError naming the read and both addresses", err)
		}
	})
}

// A write to a peer that stops reading waits for room, and ends at the
// write deadline with what was written counted: the peer then reads that
// many bytes, no more.
func TestWriteToAPeerThatStopsReading(t *testing.T) {
	tc, s, peer := pair(t)
	big := bytes.Repeat([]byte("x"), 64<<20)
	tc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := s.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= len(big) {
		t.Fatalf("Write: %d of %d, %v: want part of it and a timeout", n, len(big), err)
	}
	tc.Close()
	got, err := io.Copy(io.Discard, peer)
	if err != nil || got != int64(n) {
		t.Fatalf("the peer read %d bytes (%v), Write said %d", got, err, n)
	}
}

// Writev writes its buffers whole and in order, more of them than one
// writev takes, empty ones among them, more bytes than the socket holds.
func TestWritev(t *testing.T) {
	_, s, peer := pair(t)
	var bufs [][]byte
	var want bytes.Buffer
	for i := range 3*maxIovecs + 5 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, (i*7919)%(96<<10))
		bufs = append(bufs, b)
		want.Write(b)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(peer); got <- b }()
	n, err := s.Writev(bufs)
	if err != nil || n != int64(want.Len()) {
		t.Fatalf("Writev: %d of %d, %v", n, want.Len(), err)
	}
	if n, err := s.Writev([][]byte{nil, {}}); n != 0 || err != nil {
		t.Fatalf("Writev of nothing: %d %v", n, err)
	}
	s.Write([]byte("end"))
	s.rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_WR) })
	if b := <-got; !bytes.Equal(b, append(want.Bytes(), "end"...)) {
		t.Fatalf("the peer read %d bytes, not the %d written in order", len(b), want.Len()+3)
	}
}

// A Read and a Write may run at once (-race).
func TestReadWhileWriting(t *testing.T) {
	_, s, peer := pair(t)
	go io.Copy(peer, peer) // echo
	const n = 1 << 20
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for total := 0; total < n; {
			k, err := s.Read(buf)
			if err != nil {
				done <- err
				return
			}
			total += k
		}
		done <- nil
	}()
	chunk := bytes.Repeat([]byte("y"), 16<<10)
	for range n / len(chunk) {
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Reset binds an IO to another socket.
func TestReset(t *testing.T) {
	_, s, _ := pair(t)
	tc2, _, peer2 := pair(t)
	rc2, _ := tc2.SyscallConn()
	s.Reset(rc2, tc2)
	peer2.Write([]byte("two"))
	buf := make([]byte, 8)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "two" {
		t.Fatalf("after Reset: %q %v", buf[:n], err)
	}
}

// What one side did before it wrote happens before what the other does
// after it read those bytes, whichever of IO and net.Conn each uses, for
// the race detector as for the machine (-race: IO tells it, as net.Conn
// does).
func TestTheSocketOrdersMemory(t *testing.T) {
	_, s, peer := pair(t)
	var shared int
	buf := make([]byte, 8)
	for round := range 4 {
		done := make(chan error, 1)
		go func() {
			// The other side: reads, sees, then writes back.
			if _, err := io.ReadFull(peer, buf[:1]); err != nil {
				done <- err
				return
			}
			shared++
			_, err := peer.Write([]byte{1})
			done <- err
		}()
		shared++
		var err error
		switch round % 3 {
		case 0:
			_, err = s.Write([]byte{0})
		case 1:
			_, err = s.Writev([][]byte{{0}})
		default:
			_, err = s.Writev([][]byte{nil, {0}})
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if shared != 2*(round+1) {
			t.Fatalf("shared is %d, want %d", shared, 2*(round+1))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// ReadBeyond fills p, then goes on into beyond in the same call; what it
// reads is the stream in order, p's part first; a read that does not fill
// p leaves beyond alone; the end is io.EOF.
func TestReadBeyond(t *testing.T) {
	_, s, peer := pair(t)
	if _, err := peer.Write([]byte("0123456789abcdef")); err != nil { // one segment: it arrives whole
		t.Fatal(err)
	}
	p, beyond := make([]byte, 10), make([]byte, 4)
	n, m, err := s.ReadBeyond(p, beyond)
	if err != nil || n != 10 || m != 4 || string(p) != "0123456789" || string(beyond) != "abcd" {
		t.Fatalf("ReadBeyond: %d %d %v, %q and %q; want 10 4 nil, 0123456789 and abcd", n, m, err, p[:n], beyond[:m])
	}
	clear(beyond)
	n, m, err = s.ReadBeyond(p, beyond)
	if err != nil || n != 2 || m != 0 || string(p[:n]) != "ef" || beyond[0] != 0 {
		t.Fatalf("ReadBeyond of the rest: %d %d %v, %q; want 2 0 nil, ef, beyond untouched", n, m, err, p[:n])
	}
	peer.Write([]byte("xyz"))
	if n, m, err := s.ReadBeyond(p, nil); err != nil || n != 3 || m != 0 || string(p[:n]) != "xyz" {
		t.Fatalf("ReadBeyond with nothing beyond: %d %d %v %q; want a Read's 3 0 nil xyz", n, m, err, p[:n])
	}
	peer.Close()
	if n, m, err := s.ReadBeyond(p, beyond); n != 0 || m != 0 || err != io.EOF {
		t.Fatalf("ReadBeyond at the end: %d %d %v, want io.EOF", n, m, err)
	}
}
