package shadow_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/vipswap/vipswap/shadow"
)

// A copy goes out after prod's answer, on the mirror's goroutines; by then
// the client's connection reads its next requests into the same request,
// header map and value slices (the proxy reuses them). Each copy must
// still carry its own request's target and header: held back behind a
// copy the target is slow to answer, copies go out after the client sent
// every request, and none may carry a later request's Authorization.
func TestACopyCarriesItsOwnRequestWhileItsClientSendsTheNext(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	var mu sync.Mutex
	var seen []string
	green := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := r.URL.Query().Get("i")
		mu.Lock()
		seen = append(seen, fmt.Sprintf("i=%s seq=%s auth=%s", i, r.Header.Get("X-Seq"), r.Header.Get("Authorization")))
		mu.Unlock()
		if i == "0" {
			select { // the copies behind it wait in the queue
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(func() { unblock(); green.Close() })
	r := newRig(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
		green.Listener.Addr().String(), shadow.Options{MaxConns: 1, Timeout: time.Minute})
	r.start(100, []string{"GET"})
	const n = 6
	// One client, one request at a time: one kept connection.
	if failed := r.load(t, n, 1, 200, func(i int) *http.Request {
		req := r.get("/")(i)
		req.Header.Set("X-Seq", fmt.Sprint(i))
		req.Header.Set("Authorization", fmt.Sprintf("Bearer client-%d", i))
		return req
	}); failed != 0 {
		t.Fatalf("%d prod requests failed, want 0", failed)
	}
	unblock()
	r.settled(t, n)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("the target got %d copies, want %d: %q", len(seen), n, seen)
	}
	for _, s := range seen {
		var i, seq int
		var auth string
		if _, err := fmt.Sscanf(s, "i=%d seq=%d auth=Bearer %s", &i, &seq, &auth); err != nil || seq != i || auth != fmt.Sprintf("client-%d", i) {
			t.Errorf("a copy carries another request's header: %s", s)
		}
	}
}
