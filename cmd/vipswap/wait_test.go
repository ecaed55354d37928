package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/wire"
)

// TestWaitMeasuredWithoutEvents: swap --wait against a vipswap that has no
// GET /v1/events (an older one) or refuses every waiter (busy) still
// waits for the measurement, reading the history entry.
func TestWaitMeasuredWithoutEvents(t *testing.T) {
	for _, c := range []struct {
		name   string
		events func(w http.ResponseWriter, r *http.Request)
	}{
		{"older server", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(wire.ErrorBody{Error: "no such endpoint: GET /v1/events"})
		}},
		{"busy server", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("wait") == "" {
				json.NewEncoder(w).Encode(wire.Events{Events: []wire.Event{}, Next: 7})
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(wire.ErrorBody{Error: "64 requests already wait for events"})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var reads atomic.Int64
			mux := http.NewServeMux()
			mux.HandleFunc("GET /v1/events", c.events)
			mux.HandleFunc("GET /v1/history/1", func(w http.ResponseWriter, r *http.Request) {
				e := wire.HistoryEntry{ID: 1, Operation: "swap", From: "blue", To: "green", Result: "applied"}
				if reads.Add(1) >= 3 { // measured by the third look
					e.Measurement = &wire.Measurement{Complete: true}
				}
				json.NewEncoder(w).Encode(e)
			})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(wire.VersionHeader, "older") // it is vipswap
				w.Header().Set("Content-Type", "application/json")
				mux.ServeHTTP(w, r)
			}))
			defer srv.Close()
			e, err := waitMeasured(context.Background(), client.New(srv.URL), wire.Change{HistoryID: 1, From: "blue", To: "green"}, time.Minute, io.Discard)
			if err != nil {
				t.Fatalf("swap --wait: %v; want it to wait for the measurement without events", err)
			}
			if e.Measurement == nil || !e.Measurement.Complete {
				t.Fatalf("entry %+v, want its measurement", e)
			}
		})
	}
}
