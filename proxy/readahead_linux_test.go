//go:build linux

package proxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/proxy/rawsock"
)

// TestBytesReadAheadCount: what a read of a chunked body took ahead is the
// instance's as much as what its buffer holds. It is passed on first, in
// order; while any of it is left, the connection may not go back to the
// pool nor be looked at as quiet: those bytes would be read as the next
// request's answer.
func TestBytesReadAheadCount(t *testing.T) {
	peer, nc := vstest.TCPPair(t)
	nc.SetDeadline(time.Now().Add(time.Minute))
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c := &upstreamConn{Conn: nc, rc: rc, sock: rawsock.New(rc, nc)}
	c.br = bufio.NewReaderSize(c, bufferSize)

	sent := strings.Repeat("0123456789", 10)
	if _, err := peer.Write([]byte(sent)); err != nil { // one segment: it arrives whole
		t.Fatal(err)
	}
	c.readAhead = true
	p := make([]byte, 10)
	if n, err := c.Read(p); n != 10 || err != nil {
		t.Fatalf("Read: %d %v, want 10 bytes", n, err)
	}
	if c.aheadEnd-c.aheadAt != aheadSize {
		t.Fatalf("%d bytes read ahead, want %d", c.aheadEnd-c.aheadAt, aheadSize)
	}
	// pending is what the body's reader sees (see pending): not these.
	if c.br.Buffered() != 0 || c.pending() || c.reusable() || c.alive() {
		t.Fatalf("with bytes read ahead: buffered %d, pending %v, reusable %v, alive %v; want 0, false, false, false",
			c.br.Buffered(), c.pending(), c.reusable(), c.alive())
	}
	// The rest of the stream, in order: what was read ahead first.
	rest, err := io.ReadAll(io.LimitReader(c.br, int64(len(sent)-10)))
	if err != nil || string(p)+string(rest) != sent {
		t.Fatalf("read %q then %q (%v), want %q", p, rest, err, sent)
	}
	if c.pending() || !c.reusable() {
		t.Fatalf("with everything read: pending %v, reusable %v; want false, true", c.pending(), c.reusable())
	}
}
