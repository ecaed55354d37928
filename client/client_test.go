package client_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/wire"
)

// history is an api.Controller holding only a history, IDs 1..n.
type history struct {
	api.Controller // nil: only the history methods are called
	entries        []wire.HistoryEntry
	pages          int // HistoryBefore calls
}

func newHistory(n int) *history {
	h := &history{}
	for id := n; id >= 1; id-- {
		h.entries = append(h.entries, wire.HistoryEntry{ID: uint64(id), Operation: "swap", Result: "applied"})
	}
	return h
}

func (h *history) History(ctx context.Context, before uint64, limit int) ([]wire.HistoryEntry, error) {
	h.pages++
	var out []wire.HistoryEntry
	for _, e := range h.entries {
		if (before == 0 || e.ID < before) && (limit <= 0 || len(out) < limit) {
			out = append(out, e)
		}
	}
	return out, nil
}

// TestHistoryPages: the client walks every page once, newest first.
func TestHistoryPages(t *testing.T) {
	h := newHistory(23)
	srv := httptest.NewServer(api.NewHandler(h, api.Options{}))
	defer srv.Close()
	cl := client.New(srv.URL)
	var got []uint64
	before, pages := uint64(0), 0
	for {
		page, next, err := cl.HistoryPage(context.Background(), before, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range page {
			got = append(got, e.ID)
		}
		if next == 0 {
			break
		}
		before = next
	}
	want := make([]uint64, 0, 23)
	for id := uint64(23); id >= 1; id-- {
		want = append(want, id)
	}
	if !slices.Equal(got, want) || pages != 3 || h.pages != 3 {
		t.Fatalf("%d pages of %v (%d store reads), want 3 pages of 23..1", pages, got, h.pages)
	}
}

// TestChangesSendJSON: every change carries Content-Type application/json,
// whatever its body, or the server would refuse it as a possible
// cross-site form.
func TestChangesSendJSON(t *testing.T) {
	var types []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		types = append(types, r.Method+" "+r.Header.Get("Content-Type"))
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	cl := client.New(srv.URL)
	ctx := context.Background()
	cl.Swap(ctx, wire.ChangeRequest{})
	cl.Rollback(ctx, wire.ChangeRequest{})
	cl.Drain(ctx, "blue", "127.0.0.1:1", wire.ChangeRequest{})
	cl.Ready(ctx, "blue", "127.0.0.1:1", wire.ChangeRequest{})
	cl.Status(ctx)
	want := []string{"POST application/json", "POST application/json", "POST application/json", "POST application/json", "GET "}
	if !slices.Equal(types, want) {
		t.Fatalf("content types %q, want %q", types, want)
	}
}
