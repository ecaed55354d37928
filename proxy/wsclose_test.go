package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
	"github.com/vipswap/vipswap/route"
)

// wsInstance answers a WebSocket upgrade, sends frame, then reports every
// byte the client sends on got, until the connection ends.
func wsInstance(t *testing.T, frame []byte) (inst *route.Instance, got <-chan []byte) {
	t.Helper()
	ch := make(chan []byte, 64)
	inst = rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		c.Write(frame)
		buf := make([]byte, 1024)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				ch <- bytes.Clone(buf[:n])
			}
			if err != nil {
				close(ch)
				return false
			}
		}
	})
	return inst, ch
}

// readN reads n bytes or fails.
func readN(t *testing.T, br *bufio.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// A WebSocket open at shutdown keeps working until the limit, then gets a
// close frame (1001) from vipswap at a frame boundary, even while the
// instance is in the middle of sending a long frame; the client's
// answering close frame reaches the instance.
func TestWebSocketClosedCleanlyAtShutdownLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte // what the instance sends first
	}{
		{"between frames", []byte{0x81, 0x02, 'h', 'i'}},
		{"after a frame of 70000 bytes (a 64-bit length)", append([]byte{0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0x11, 0x70}, make([]byte, 70000)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inst, got := wsInstance(t, tc.frame)
			prod, p := proxyOf(t, Options{}, inst)
			c, br := vstest.DialWebSocket(t, prod, time.Minute)
			if first := readN(t, br, len(tc.frame)); !bytes.Equal(first, tc.frame) {
				t.Fatalf("first frame: % x", first[:min(16, len(first))])
			}
			// A masked text frame "ok" from the client reaches the instance.
			msg := []byte{0x81, 0x82, 1, 2, 3, 4, 'o' ^ 1, 'k' ^ 2}
			c.Write(msg)
			var seen []byte
			for !bytes.Equal(seen, msg) {
				b, ok := <-got
				if !ok {
					t.Fatalf("the instance's connection ended; it had %q", seen)
				}
				seen = append(seen, b...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Shutdown(ctx) }()
			if f := readN(t, br, len(goingAwayFrame)); !bytes.Equal(f, goingAwayFrame) {
				t.Fatalf("at the limit the client got % x, want a close frame % x", f, goingAwayFrame)
			}
			closeFrame := []byte{0x88, 0x82, 9, 9, 9, 9, 0x03 ^ 9, 0xe9 ^ 9}
			c.Write(closeFrame)
			seen = nil
			for b := range got {
				seen = append(seen, b...)
			}
			if !bytes.Equal(seen, closeFrame) {
				t.Fatalf("the instance got % x after the limit, want the client's close frame", seen)
			}
			if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Shutdown: %v, want the limit's error", err)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the close frames: %v, want the connection closed", err)
			}
		})
	}
}
