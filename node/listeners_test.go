package node

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// listenLoopback returns a new listening socket on 127.0.0.1, closed at
// the test's end.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// asInherited passes ln through a descriptor, as systemd hands it over.
func asInherited(t *testing.T, name string, ln net.Listener) namedListener {
	t.Helper()
	f, err := ln.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd())) // a descriptor of its own, under name
	if err != nil {
		t.Fatal(err)
	}
	return inheritedListeners([]*os.File{os.NewFile(uintptr(fd), name)})[0]
}

// TestMatchInherited: inherited sockets go to the listener of their name,
// or of their address; anything else is a one-line error naming the
// socket, and closes every inherited socket.
func TestMatchInherited(t *testing.T) {
	prod, stage, admin, other := listenLoopback(t), listenLoopback(t), listenLoopback(t), listenLoopback(t)
	addrs := map[string]string{"listeners.prod": prod.Addr().String(), "listeners.stage": stage.Addr().String(), "admin.listen": admin.Addr().String()}

	got, err := matchInherited([]namedListener{asInherited(t, "prod", prod), asInherited(t, "vipswap.socket", stage), asInherited(t, "admin", admin)}, addrs)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range addrs {
		if got[key] == nil || got[key].Addr().String() != want {
			t.Fatalf("%s: got %v, want the socket on %s", key, got[key], want)
		}
		got[key].Close()
	}

	wild := map[string]string{"listeners.prod": ":" + portOf(prod), "listeners.stage": "0.0.0.0:1", "admin.listen": "[::]:2"}
	if _, err := matchInherited([]namedListener{asInherited(t, "prod", prod)}, wild); err == nil || !strings.Contains(err.Error(), "is bound to") {
		t.Fatalf("a wildcard address for a socket bound to 127.0.0.1: %v, want an error", err)
	}

	dir := t.TempDir()
	unix, err := net.Listen("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	cases := map[string]struct {
		sockets []namedListener
		want    string
	}{
		"no listener's":          {[]namedListener{asInherited(t, "x", other)}, `inherited socket "x" on ` + other.Addr().String() + " matches no listener"},
		"named, bound elsewhere": {[]namedListener{asInherited(t, "stage", other)}, "listeners.stage is " + stage.Addr().String() + ` but the inherited socket "stage" is bound to ` + other.Addr().String()},
		"two for one":            {[]namedListener{asInherited(t, "prod", prod), asInherited(t, "", prod)}, "two inherited sockets for listeners.prod"},
		"not TCP":                {[]namedListener{asInherited(t, "prod", prod), asInherited(t, "admin", unix)}, `inherited socket "admin": it is a unix socket, not TCP`},
		"a name that is a key":   {[]namedListener{asInherited(t, "listeners.prod", other)}, "matches no listener"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := matchInherited(c.sockets, addrs)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line with %q", err, c.want)
			}
			for _, s := range c.sockets {
				if s.ln == nil {
					continue
				}
				if _, err := s.ln.Accept(); err == nil || !strings.Contains(err.Error(), "closed") {
					t.Fatalf("inherited socket %q left open after the error (%v)", s.name, err)
				}
			}
		})
	}
}

// portOf returns ln's port.
func portOf(ln net.Listener) string {
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestSameAddr: the configured address names the bound one when ports and
// IPs are equal, or both are wildcards.
func TestSameAddr(t *testing.T) {
	for _, c := range []struct {
		addr  string
		bound net.TCPAddr
		same  bool
	}{
		{"127.0.0.1:80", net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, true},
		{"127.0.0.1:81", net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, false},
		{"127.0.0.2:80", net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, false},
		{":80", net.TCPAddr{IP: net.IPv6unspecified, Port: 80}, true},
		{"0.0.0.0:80", net.TCPAddr{IP: net.IPv6unspecified, Port: 80}, true},
		{"[::]:80", net.TCPAddr{IP: net.IPv4zero, Port: 80}, true},
		{":80", net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, false},
		{"[::1]:80", net.TCPAddr{IP: net.IPv6loopback, Port: 80}, true},
		{"localhost:80", net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, true},
		{"no port", net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, false},
		{"127.0.0.1:http", net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}, false},
	} {
		if got := sameAddr(c.addr, &c.bound); got != c.same {
			t.Errorf("sameAddr(%q, %s) = %v, want %v", c.addr, &c.bound, got, c.same)
		}
	}
}

// TestCheckListenFDs: a LISTEN_FDS for this process that is no small
// count is refused before any descriptor is taken on its word; one for
// another process is ignored.
func TestCheckListenFDs(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		pid, fds string
		want     string
	}{
		{me, "3", ""},
		{me, "0", ""},
		{"1", "garbage", ""},
		{"", "3", ""},
		{me + "0", "3", ""},
		{me, "", "is no count of sockets"},
		{me, "three", "is no count of sockets"},
		{me, "-1", "is no count of sockets"},
		{me, "4", "takes 3 sockets at most"},
		{me, "2147483647", "takes 3 sockets at most"},
		{me, "99999999999999999999999999", "is no count of sockets"},
		{me, strings.Repeat("9", 10000), "is no count of sockets"},
	} {
		err := checkListenFDs(c.pid, c.fds)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || len(err.Error()) > 200) {
			t.Errorf("LISTEN_PID=%.20s LISTEN_FDS=%.20s: %v, want %q", c.pid, c.fds, err, c.want)
		}
	}
}

// TestInheritedNotASocket: a descriptor that is no socket is refused with
// its name.
func TestInheritedNotASocket(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "file"))
	if err != nil {
		t.Fatal(err)
	}
	got := inheritedListeners([]*os.File{f})
	if _, err := matchInherited(got, map[string]string{}); err == nil || !strings.Contains(err.Error(), `inherited socket "`+f.Name()+`"`) {
		t.Fatalf("a regular file handed over as a socket: %v", err)
	}
}

// TestClientConnectionsHaveNoKeepAliveProbes: prod's and stage's
// listeners accept connections without TCP keep-alive probes (a tunnel
// turns them on: see the h1 package's tests).
func TestClientConnectionsHaveNoKeepAliveProbes(t *testing.T) {
	ln, err := listenClients("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if on := soKeepAlive(t, sc); on {
		t.Fatal("an accepted client connection has SO_KEEPALIVE on")
	}
	if on := soKeepAlive(t, c); !on {
		t.Fatal("the check itself: a dialed connection (Go's default) has SO_KEEPALIVE off")
	}
}

// soKeepAlive reports whether nc's socket has SO_KEEPALIVE on.
func soKeepAlive(t *testing.T, nc net.Conn) bool {
	t.Helper()
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
	if serr != nil {
		t.Fatal(serr)
	}
	return v != 0
}
