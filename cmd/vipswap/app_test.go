package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

// TestSampleApp checks the probe contract, /api/test, and the SIGTERM drain:
// a request in flight finishes, new connections are refused, exit code 0.
func TestSampleApp(t *testing.T) {
	t.Parallel()
	app := vstest.StartApp(t, "slot0", "127.0.0.1:0")
	base := "http://" + app.Addr

	for query, want := range map[string]int{"slot=slot0": 200, "slot=slot1": 404} {
		resp, err := http.Get(base + "/api/ping?" + query)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("ping ?%s = %d, want %d", query, resp.StatusCode, want)
		}
	}

	resp, err := http.Get(base + "/api/test")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got["slot"] != "slot0" || got["version"] != "slot0-v1" || got["instance"] != app.Addr {
		t.Fatalf("/api/test = %v", got)
	}

	resp, err = http.Get(base + "/api/test?delay=forever")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad delay answered %d, want 400", resp.StatusCode)
	}

	done := make(chan string, 1)
	go func() {
		resp, err := http.Get(base + "/api/test?delay=1s")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- resp.Status + " " + string(b)
	}()
	app.WaitLine(t, regexp.MustCompile(`holding a request for 1s`), 10*time.Second)
	app.Signal(t, syscall.SIGTERM)
	if r := <-done; r[:3] != "200" {
		t.Fatalf("request in flight at SIGTERM got %q, want 200", r)
	}
	if code := app.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("app exited %d, want 0", code)
	}
}
