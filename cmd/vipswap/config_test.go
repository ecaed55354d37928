package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// TestServeRefusesBadConfig: each invalid configuration makes serve exit 1
// with a message naming the key, before it listens on anything. The messages
// themselves are tested in package config.
func TestServeRefusesBadConfig(t *testing.T) {
	t.Parallel()
	// A port we know is free, so we can check nothing listened on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	prod := ln.Addr().String()
	ln.Close()
	good := strings.Replace(testConfig(t.TempDir(), staticSlots(map[string][]string{
		"blue": {"127.0.0.1:1"}, "green": {"127.0.0.1:2"},
	})), "prod: 127.0.0.1:0", "prod: "+prod, 1)

	cases := []struct {
		name, from, to, want string
	}{
		{"unknown key", "health:", "helth:", "helth: unknown key"},
		{"bad duration", "interval: 100ms", "interval: fast", `health.interval: invalid duration "fast"`},
		{"slot with neither instances nor run", "    instances: [127.0.0.1:2]", "", "slots.green: set instances or run"},
		{"slot with both", "    instances: [127.0.0.1:2]", "    instances: [127.0.0.1:2]\n    run: {command: [x, '{port}']}", "slots.green: set instances or run, not both"},
		{"active names no slot", "active: blue", "active: red", `active: slot "red" is not defined`},
		{"duplicate address", "127.0.0.1:2", "127.0.0.1:1", "duplicate address 127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(good, c.from) {
				t.Fatalf("test config lacks %q", c.from)
			}
			path := filepath.Join(t.TempDir(), "bad.yaml")
			os.WriteFile(path, []byte(strings.Replace(good, c.from, c.to, 1)), 0o600)
			p := vstest.Start(t, vstest.Binary(t), "serve", "-c", path)
			if code := p.Wait(t, 30*time.Second); code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, p.Output())
			}
			out := strings.TrimSpace(p.Output())
			if !strings.Contains(out, c.want) || !strings.HasPrefix(out, "vipswap serve: "+path+":") {
				t.Fatalf("stderr %q, want it to start with the file and contain %q", out, c.want)
			}
			if strings.Contains(out, "listening") {
				t.Fatalf("serve listened before refusing its config:\n%s", out)
			}
		})
	}
	if c, err := net.Dial("tcp", prod); err == nil {
		c.Close()
		t.Fatal("something listens on the prod address")
	}
}

func TestServeMissingConfig(t *testing.T) {
	t.Parallel()
	p := vstest.Start(t, vstest.Binary(t), "serve", "-c", filepath.Join(t.TempDir(), "nope.yaml"))
	if code := p.Wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if out := p.Output(); !strings.Contains(out, "nope.yaml: no such file") {
		t.Fatalf("stderr %q, want it to name the missing file", out)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"frobnicate"}, {"swap", "--bogus"}, {"app", "--slot", "blue"}, {"status", "extra"}} {
		p := vstest.Start(t, vstest.Binary(t), args...)
		if code := p.Wait(t, 30*time.Second); code != 2 {
			t.Errorf("vipswap %v: exit code %d, want 2:\n%s", args, code, p.Output())
		}
	}
}
