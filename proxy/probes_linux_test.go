//go:build linux

package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/vipswap/vipswap/route"
)

// keepAliveTo returns SO_KEEPALIVE of each socket of this process
// connected to port (the proxy's connections to an instance there).
func keepAliveTo(t *testing.T, port int) []int {
	t.Helper()
	var got []int
	for fd := 3; fd < 4096; fd++ {
		sa, err := syscall.Getpeername(fd)
		if err != nil {
			continue
		}
		if in4, ok := sa.(*syscall.SockaddrInet4); !ok || in4.Port != port {
			continue
		}
		v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	return got
}

// TestInstanceKeepAliveProbesOnlyOnTunnels: instance connections are
// dialled without TCP keep-alive probes (what waits on them has a
// timeout), and a tunnel, which has none, turns them on.
func TestInstanceKeepAliveProbesOnlyOnTunnels(t *testing.T) {
	in := newInstance(t, "blue", "ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			fmt.Fprint(w, "plain")
			return
		}
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "echo")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo: " + line)
		brw.Flush()
		brw.ReadString('\n') // until the client goes
	})
	port := in.Listener.Addr().(*net.TCPAddr).Port
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{in.inst}, nil))
	prod, _ := serve(t, p)
	if code, body := get(t, prod); code != 200 || body != "plain" {
		t.Fatalf("GET: %d %q", code, body)
	}
	if got := keepAliveTo(t, port); len(got) != 1 || got[0] != 0 {
		t.Fatalf("SO_KEEPALIVE of the pooled instance connection: %v, want [0]", got)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(prod, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade response %v, %v", resp, err)
	}
	fmt.Fprintf(conn, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo: hello\n" {
		t.Fatalf("got %q, %v", line, err)
	}
	// The tunnel took the pooled connection (or a new one): one with
	// probes, and no other.
	got := keepAliveTo(t, port)
	on := 0
	for _, v := range got {
		if v != 0 {
			on++
		}
	}
	if on != 1 {
		t.Fatalf("SO_KEEPALIVE of the instance connections with a tunnel open: %v, want one on", got)
	}
}
