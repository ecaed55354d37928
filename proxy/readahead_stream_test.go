package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAChunkEndingAtTheBufferIsNotHeldBack: an instance sends a burst of
// chunks, each whole with its CRLF, then pauses (a streamed answer's
// events). The burst is laid out so that the connection's buffer fills at
// the end of a chunk's data and only that chunk's CRLF is left, read ahead
// in the same system call: nothing the client could get by waiting. What
// arrived must reach the client during the pause, not once the instance
// sends more.
func TestAChunkEndingAtTheBufferIsNotHeldBack(t *testing.T) {
	for _, second := range []int{1, 100, 1000, 3000} {
		t.Run(fmt.Sprint(second), func(t *testing.T) {
			const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			// The head and a first chunk fill the first read exactly
			// (4 KiB); the first chunk's CRLF, a second chunk and a third
			// fill the next (4 KiB); the third's CRLF is beyond.
			chunk := func(data int) string { return fmt.Sprintf("%x\r\n%s", data, strings.Repeat("d", data)) }
			size := func(data int) int { return len(chunk(data)) }
			fit := func(room int) int { // the data of a chunk that takes room bytes
				d := room - 3
				for size(d) > room {
					d--
				}
				if size(d) != room {
					t.Fatalf("no chunk takes %d bytes", room)
				}
				return d
			}
			first := fit(bufferSize - len(head))
			third := fit(bufferSize - 2 - size(second) - 2)
			burst := head + chunk(first) + "\r\n" + chunk(second) + "\r\n" + chunk(third) + "\r\n"
			if len(burst) != 2*bufferSize+2 {
				t.Fatalf("the burst is %d bytes, want %d", len(burst), 2*bufferSize+2)
			}
			data := first + second + third
			release := make(chan struct{})
			inst := rawAnswerer(t, func(c net.Conn, r *http.Request) bool {
				if _, err := io.WriteString(c, burst); err != nil { // one segment: it arrives whole
					return false
				}
				<-release
				io.WriteString(c, "0\r\n\r\n")
				return true
			})
			prod, _ := proxyOf(t, Options{}, inst)
			resp, err := http.Get(prod)
			if err != nil {
				close(release)
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got := make(chan error, 1)
			go func() {
				b := make([]byte, data)
				_, err := io.ReadFull(resp.Body, b)
				if err == nil && string(b) != strings.Repeat("d", data) {
					err = fmt.Errorf("the %d bytes sent differ", data)
				}
				got <- err
			}()
			select {
			case err := <-got:
				close(release)
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second): // not a bound on speed: what arrived never comes
				close(release)
				t.Fatalf("the %d bytes of the burst were held back until the instance sent more", data)
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || len(rest) != 0 {
				t.Fatalf("after the burst: %q, %v; want the end", rest, err)
			}
		})
	}
}
