package api_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

func TestEventsWaitForTheNextChange(t *testing.T) {
	f := newFixture(t, api.Options{})
	var start wire.Events
	if code := f.call(t, "GET", "/v1/events", "", "", &start); code != 200 || len(start.Events) != 0 || start.Next == 0 {
		t.Fatalf("GET /v1/events: %d %+v, want no event and the number to ask from", code, start)
	}
	var got wire.Events
	var code int
	var wg sync.WaitGroup
	wg.Go(func() {
		code = f.call(t, "GET", fmt.Sprintf("/v1/events?since=%d&wait=20s", start.Next), "", "", &got)
	})
	var res wire.Change
	if c := f.call(t, "POST", "/v1/swap", "", `{}`, &res); c != 200 {
		t.Fatalf("swap: %d", c)
	}
	wg.Wait()
	if code != 200 || len(got.Events) == 0 || got.Events[0].Seq != start.Next+1 {
		t.Fatalf("the waiting GET answered %d %+v, want the events from %d", code, got, start.Next+1)
	}
	found := false
	for _, e := range got.Events {
		found = found || (e.Kind == wire.EventChange && e.HistoryID == res.HistoryID)
	}
	if !found {
		t.Fatalf("no change event of history %d among %+v", res.HistoryID, got.Events)
	}
}

func TestEventsRefuseBadQueries(t *testing.T) {
	f := newFixture(t, api.Options{})
	for _, q := range []string{"since=-1", "since=x", "since=99999999999999999999", "wait=1h", "wait=-1s", "wait=soon", "since=1&wait=26s"} {
		var e wire.ErrorBody
		if code := f.call(t, "GET", "/v1/events?"+q, "", "", &e); code != http.StatusBadRequest || e.Error == "" {
			t.Errorf("GET /v1/events?%s: %d %q, want 400 naming the parameter", q, code, e.Error)
		}
	}
	var evs wire.Events
	if code := f.call(t, "GET", "/v1/events?since=999999", "", "", &evs); code != 200 || !evs.Missed {
		t.Errorf("events since a number never given: %d %+v, want missed", code, evs)
	}
}

func TestEventsNeedATokenWhenReadsAreProtected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("ci "+secret+"\n"), 0o600)
	tokens, err := api.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, api.Options{Tokens: api.NewTokenSet(tokens), ProtectReads: true})
	if code := f.call(t, "GET", "/v1/events?since=0", "", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/events without a token: %d, want 401", code)
	}
	if code := f.call(t, "GET", "/v1/events?since=0", secret, "", nil); code != 200 {
		t.Fatalf("GET /v1/events with the token: %d", code)
	}
}

// TestEventWaitersAreBounded: requests that wait for events cannot take
// every admin connection: beyond 64 waiting, one is answered 503 at once.
func TestEventWaitersAreBounded(t *testing.T) {
	f := newFixture(t, api.Options{})
	since := f.ctrl.LastEvent()
	type answer struct {
		code int
		msg  string
	}
	answers := make(chan answer, 65)
	var wg sync.WaitGroup
	for range 65 {
		wg.Go(func() {
			var e wire.ErrorBody
			code := f.call(t, "GET", fmt.Sprintf("/v1/events?since=%d&wait=20s", since), "", "", &e)
			answers <- answer{code, e.Error}
		})
	}
	// Nothing happens until the swap: the one answered first is the one
	// beyond the bound.
	first := <-answers
	if first.code != http.StatusServiceUnavailable || first.msg == "" {
		t.Fatalf("the 65th waiter: %d %q, want a 503 that says why", first.code, first.msg)
	}
	if c := f.call(t, "POST", "/v1/swap", "", `{}`, nil); c != 200 {
		t.Fatalf("swap: %d", c)
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.code != 200 {
			t.Fatalf("a waiter got %d %q once the swap happened", a.code, a.msg)
		}
	}
}
