package slotapp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vipswap/vipswap/internal/vstest"
)

func TestPing(t *testing.T) {
	h := Ping("slot0")
	for query, want := range map[string]int{"slot=slot0": 200, "slot=slot1": 404, "": 404} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/ping?"+query, nil))
		if rec.Code != want {
			t.Errorf("?%s: got %d, want %d", query, rec.Code, want)
		}
	}
}

func TestServeDrains(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, mux) }()
	url := "http://" + ln.Addr().String()

	// Open a keep-alive connection first, so a request can arrive on it
	// after the drain starts.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	resp, err := client.Get(url + "/fast")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()

	slow := make(chan string, 1)
	go func() {
		resp, err := http.Get(url + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(b)
	}()
	<-started
	stop()

	// New connections are refused once the listener is closed.
	vstest.WaitFor(t, 5*time.Second, func() error {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil
		}
		c.Close()
		return errors.New("still accepting connections")
	})
	close(release)
	if got := <-slow; got != "finished" {
		t.Fatalf("in-flight request got %q, want finished", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}
