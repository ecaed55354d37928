package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"
)

// A WebSocket tunnel still open when Shutdown's limit is reached is closed
// cleanly: the proxy copies the instance's frames to the client whole, so
// that between two frames it can send the client a close frame (1001,
// "going away") of its own; the client answers with its close frame, which
// reaches the instance like any frame of the client's, and the connections
// close a moment later (wsCloseGrace). Other upgraded protocols are closed
// at the limit as before.

// wsCloseGrace is how long a tunnel closed at the limit waits for the
// client's answering close frame.
const wsCloseGrace = time.Second

// goingAwayFrame is an unmasked close frame (a server's) with status 1001.
var goingAwayFrame = []byte{0x88, 0x02, 0x03, 0xe9}

// errGoingAway ends a relay that sent the client its close frame.
var errGoingAway = errors.New("proxy: websocket closed at the shutdown limit")

// goAway lets the WebSocket tunnels know that the shutdown limit is
// reached: each closes at its next frame boundary.
func (p *Proxy) goAway() { p.awayOnce.Do(func() { close(p.away) }) }

// relayFrames copies WebSocket frames from the instance (src, read from
// conn) to the client (dst) until src ends (then half-closes dst, as pipe
// does), or until away is closed and the relay is between two frames: it
// then sends the client a close frame and returns errGoingAway. A frame
// whose header is not a WebSocket one's is copied byte for byte like any
// other (the client judges it).
func relayFrames(dst net.Conn, src *bufio.Reader, conn net.Conn, away <-chan struct{}) error {
	woken := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-away:
			close(woken) // before the deadline: a read it wakes sees woken
			conn.SetReadDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	isAway := func() bool {
		select {
		case <-woken:
			return true
		default:
			return false
		}
	}
	// read fills b, riding over the wake's deadline mid-frame.
	read := func(b []byte) error {
		for n := 0; n < len(b); {
			k, err := src.Read(b[n:])
			n += k
			var ne net.Error
			if err != nil && errors.As(err, &ne) && ne.Timeout() && isAway() {
				conn.SetReadDeadline(time.Time{})
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	var head [14]byte
	buf := make([]byte, 32<<10)
	for {
		if isAway() && src.Buffered() == 0 {
			return goingAway(dst)
		}
		if _, err := src.Peek(1); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && isAway() {
				return goingAway(dst)
			}
			if err == io.EOF {
				return pipe(dst, eofReader{})
			}
			return err
		}
		if err := read(head[:2]); err != nil {
			return err
		}
		n, size := 2, uint64(head[1]&0x7f)
		switch size {
		case 126:
			n += 2
		case 127:
			n += 8
		}
		if head[1]&0x80 != 0 {
			n += 4 // a mask key (a server sends none, but its bytes pass on)
		}
		if err := read(head[2:n]); err != nil {
			return err
		}
		switch size {
		case 126:
			size = uint64(head[2])<<8 | uint64(head[3])
		case 127:
			size = 0
			for _, b := range head[2:10] {
				size = size<<8 | uint64(b)
			}
		}
		if _, err := dst.Write(head[:n]); err != nil {
			return err
		}
		for size > 0 {
			k := min(uint64(len(buf)), size)
			if err := read(buf[:k]); err != nil {
				return err
			}
			if _, err := dst.Write(buf[:k]); err != nil {
				return err
			}
			size -= k
		}
	}
}

// goingAway sends the client the close frame.
func goingAway(dst net.Conn) error {
	if _, err := dst.Write(goingAwayFrame); err != nil {
		return err
	}
	return errGoingAway
}

// eofReader is an empty reader: pipe from it only half-closes.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
