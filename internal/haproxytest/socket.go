package haproxytest

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"testing"
)

// ServeSocket stands in for HAProxy's runtime API on a unix socket in a
// temporary directory, one command per connection as HAProxy does without
// "prompt": each command line (newline removed) gets answer's reply, and
// the connection closes. It returns the socket's path.
func ServeSocket(t testing.TB, answer func(cmd string) string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				io.WriteString(c, answer(line[:len(line)-1]))
			}()
		}
	}()
	return path
}

// Forward sends one command to the runtime API at the unix socket
// upstream and returns its whole answer ("" if it cannot be reached).
func Forward(upstream, cmd string) string {
	up, err := net.Dial("unix", upstream)
	if err != nil {
		return ""
	}
	defer up.Close()
	io.WriteString(up, cmd+"\n")
	b, _ := io.ReadAll(up)
	return string(b)
}
