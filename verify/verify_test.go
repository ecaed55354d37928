package verify

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingServer answers GET with a JSON naming its slot, fails every
// 7th request with a 503 and breaks off every 11th (the connection closed
// without an answer), and counts what it did.
type countingServer struct {
	mu                   sync.Mutex
	seen, ok, err, reset int64
}

func (s *countingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.seen++
	n := s.seen
	switch {
	case n%11 == 0:
		s.reset++
	case n%7 == 0:
		s.err++
	default:
		s.ok++
	}
	s.mu.Unlock()
	switch {
	case n%11 == 0:
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.(*net.TCPConn).SetLinger(0) // a reset, not a clean close
		conn.Close()
	case n%7 == 0:
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		fmt.Fprint(w, `{"slot":"blue","version":"1.0"}`)
	}
}

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// verify's counts are the server's own, exactly: every request it saw,
// every 503 and every connection it broke off, including requests Go's
// client replayed on another connection.
func TestCountsMatchTheServer(t *testing.T) {
	s := &countingServer{}
	url := serve(t, s)
	r, err := Run(context.Background(), Options{URL: url, Concurrency: 20, Requests: 3000, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reset == 0 || s.err == 0 {
		t.Fatalf("the server injected no failure: %+v", s)
	}
	// A connection the server broke off is a reset, or a replayed attempt
	// when the client sent the request again on another connection.
	broken := r.Failures[KindReset] + r.Failures[KindReplayed]
	if r.Requests != s.seen || r.OK != s.ok || r.Failures[KindStatus] != s.err || broken != s.reset || r.Failed != s.err+s.reset {
		t.Fatalf("verify counted %d requests, %d ok, %d status, %d reset or replayed, %d failed (%v); the server saw %d, answered %d, failed %d, reset %d",
			r.Requests, r.OK, r.Failures[KindStatus], broken, r.Failed, r.Failures, s.seen, s.ok, s.err, s.reset)
	}
	if r.Statuses[200] != s.ok || r.Statuses[503] != s.err {
		t.Fatalf("statuses %v, want 200: %d, 503: %d", r.Statuses, s.ok, s.err)
	}
	var answered int64
	for _, sec := range r.Seconds {
		answered += sec.Answered["blue 1.0"]
	}
	if answered != s.ok {
		t.Fatalf("per second, blue 1.0 answered %d, want %d", answered, s.ok)
	}
	var out strings.Builder
	Report(&out, r)
	for _, want := range []string{fmt.Sprintf("%d requests", s.seen), fmt.Sprintf("status %d, connect 0, reset %d, timeout 0, replayed %d", s.err, r.Failures[KindReset], r.Failures[KindReplayed]), "blue 1.0 ####"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestConnectAndTimeoutFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	r, err := Run(context.Background(), Options{URL: "http://" + closed + "/", Concurrency: 2, Requests: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 10 || r.Failures[KindConnect] != 10 || r.Failed != 10 {
		t.Fatalf("against a closed port: %d requests, failures %v", r.Requests, r.Failures)
	}

	hang := make(chan struct{})
	defer close(hang)
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	r, err = Run(context.Background(), Options{URL: url, Concurrency: 3, Requests: 3, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 3 || r.Failures[KindTimeout] != 3 {
		t.Fatalf("against a server that never answers: %d requests, failures %v", r.Requests, r.Failures)
	}
	// An answer whose body never ends is a timeout too, not a success.
	url = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			if _, err := w.Write([]byte("more ")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	r, err = Run(context.Background(), Options{URL: url, Concurrency: 2, Requests: 2, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 2 || r.Failures[KindTimeout] != 2 || r.OK != 0 {
		t.Fatalf("against a body that never ends: %d requests, %d ok, failures %v", r.Requests, r.OK, r.Failures)
	}
	if _, err := Run(context.Background(), Options{URL: "ftp://x/", Requests: 1}); err == nil || !strings.Contains(err.Error(), "want http://") {
		t.Fatalf("bad URL: %v", err)
	}
}
