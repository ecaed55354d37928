package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// wsEcho is an instance that answers every plain request (its health
// checks) with 200, and a WebSocket upgrade with an echo of each frame
// (unmasked, as a server sends), until the client's close frame, which it
// reports on closes.
type wsEcho struct {
	addr   string
	closes chan []byte
}

func startWSEcho(t *testing.T) *wsEcho {
	t.Helper()
	e := &wsEcho{closes: make(chan []byte, 16)}
	e.addr = vstest.Serve(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"slot\":\"green\"}")
				continue
			}
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			e.echo(c, br)
			return
		}
	})
	return e
}

// echo answers client frames (short ones: the test's) until a close frame.
func (e *wsEcho) echo(c net.Conn, br *bufio.Reader) {
	for {
		var head [6]byte
		if _, err := io.ReadFull(br, head[:]); err != nil || head[1]&0x80 == 0 || head[1]&0x7f > 125 {
			return
		}
		payload := make([]byte, head[1]&0x7f)
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		for i := range payload {
			payload[i] ^= head[2+i%4]
		}
		if head[0]&0x0f == 0x8 {
			e.closes <- payload
			return
		}
		c.Write(append([]byte{head[0], byte(len(payload))}, payload...))
	}
}

// wsMasked is a client's masked frame of opcode op.
func wsMasked(op byte, payload []byte) []byte {
	f := []byte{0x80 | op, 0x80 | byte(len(payload)), 7, 7, 7, 7}
	for _, b := range payload {
		f = append(f, b^7)
	}
	return f
}

// TestWebSocketAcrossUpgrades: a WebSocket opened before each upgrade
// keeps working after it (the old process holds it) until the old
// process's limit (proxy.shutdown_timeout), then gets a close frame (1001,
// going away) between two frames, and the client's answering close frame
// reaches the instance. A new WebSocket opened after the upgrade is the
// new process's.
func TestWebSocketAcrossUpgrades(t *testing.T) {
	dir := t.TempDir()
	bins := []string{vstest.BinaryVersion(t, dir, "ws-a"), vstest.BinaryVersion(t, dir, "ws-b")}
	blue := vstest.StartApp(t, "blue", "127.0.0.1:0")
	ws := startWSEcho(t)
	config := testConfig(dir, staticSlots(map[string][]string{"blue": {blue.Addr}, "green": {ws.addr}})) + "proxy:\n  shutdown_timeout: 2s\n"
	u := serveUpgradable(t, bins[0], dir, config)
	u.WaitHealthy(t)
	for i := range 2 {
		// Opened on stage, which the standby slot (green, the echo) serves.
		c, br := vstest.DialWebSocket(t, u.Stage, 2*time.Minute)
		roundTrip := func(msg string) {
			t.Helper()
			c.Write(wsMasked(0x1, []byte(msg)))
			want := append([]byte{0x81, byte(len(msg))}, msg...)
			got := make([]byte, len(want))
			if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("upgrade %d: echo of %q: % x, %v", i+1, msg, got, err)
			}
		}
		roundTrip("before")
		old := u.pid(t)
		out, code := u.upgradeCLI(t, bins[0], "--binary", bins[(i+1)%2])
		if code != 0 {
			t.Fatalf("upgrade %d: exit %d:\n%s", i+1, code, out)
		}
		roundTrip("after") // the old process still holds it
		// At the old process's limit: a close frame, 1001.
		got := make([]byte, 4)
		if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, []byte{0x88, 0x02, 0x03, 0xe9}) {
			t.Fatalf("upgrade %d: at the limit: % x, %v; want a close frame, 1001", i+1, got, err)
		}
		c.Write(wsMasked(0x8, []byte{0x03, 0xe9}))
		select {
		case p := <-ws.closes:
			if !bytes.Equal(p, []byte{0x03, 0xe9}) {
				t.Fatalf("upgrade %d: the instance got the close payload % x", i+1, p)
			}
		case <-time.After(time.Minute):
			t.Fatalf("upgrade %d: the client's close frame did not reach the instance", i+1)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("upgrade %d: after the close frames: %v, want the connection closed", i+1, err)
		}
		waitGone(t, old)
		if err := getStage(u.Stage); err != nil {
			t.Fatalf("upgrade %d: stage after it: %v", i+1, err)
		}
	}
}

// getStage is one GET through stage.
func getStage(stage string) error {
	resp, err := httpClient.Get(stage + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
