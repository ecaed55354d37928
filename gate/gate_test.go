//go:build unix

package gate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCommand(t *testing.T) {
	ctx := context.Background()
	out, err := Command(ctx, []string{"/bin/sh", "-c", "echo one; echo two; exit 3"}, nil)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || LastLine(out, 300) != "two" {
		t.Fatalf("a failing command: %q, %v; want exit status 3 and last line two", out, err)
	}
	// What a gate starts in the background does not outlive it.
	out, err = Command(ctx, []string{"/bin/sh", "-c", "sleep 300 & echo $!"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("pid %q: %v", out, err)
	}
	deadline := time.Now().Add(time.Minute)
	for syscall.Kill(pid, 0) == nil { // a zombie counts until reaped by init
		if time.Now().After(deadline) {
			t.Fatalf("the gate's background child %d still runs", pid)
		}
		<-time.After(10 * time.Millisecond)
	}
	// A gate that never ends is killed, with its children, at its deadline.
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := Command(ctx, []string{"/bin/sh", "-c", "sleep 300; echo never"}, nil); err == nil {
		t.Fatal("a command past its deadline succeeded")
	}
	// A huge output keeps its last 4 KiB.
	out, _ = Command(context.Background(), []string{"/bin/sh", "-c", "yes x | head -c 100000; echo; echo end"}, nil)
	if len(out) > 4096 || LastLine(out, 300) != "end" {
		t.Fatalf("kept %d bytes ending %q", len(out), LastLine(out, 300))
	}
}

func TestHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := HTTP(context.Background(), srv.URL+"/ok"); err != nil {
		t.Fatal(err)
	}
	if err := HTTP(context.Background(), srv.URL+"/bad"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("a 503: %v", err)
	}
}
