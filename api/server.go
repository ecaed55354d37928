// Package api is vipswap's admin HTTP API, versioned under /v1/: its wire
// types and its server. It reaches the controller through the narrow
// Controller interface it declares, and renders every error as JSON
// {"error": "..."} in one place.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// Controller is what the admin API needs from the controller. Methods are
// called concurrently.
type Controller interface {
	// Status returns the routing state and every instance's counters.
	Status() Status
	// Swap exchanges active and standby; errors that are the caller's to
	// fix are *Error values with a 4xx status.
	Swap(ctx context.Context, req SwapRequest) (SwapResult, error)
}

// Error is an error with the HTTP status the API answers it with.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Err is the underlying error; its message is shown to the caller.
	Err error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// maxBody bounds request bodies; every request body of this API is tiny.
const maxBody = 1 << 20

// NewHandler returns the admin API handler.
func NewHandler(c Controller, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	s := &server{c: c, log: log}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/status", s.handle(s.status))
	mux.Handle("POST /v1/swap", s.handle(s.swap))
	mux.Handle("GET /healthz", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	mux.Handle("/", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return &Error{Status: http.StatusNotFound, Err: fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path)}
	}))
	return mux
}

type server struct {
	c   Controller
	log *slog.Logger
}

// handle adapts a handler that returns an error, rendering the error as JSON.
func (s *server) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		status := http.StatusInternalServerError
		var apiErr *Error
		if errors.As(err, &apiErr) {
			status = apiErr.Status
		}
		if status >= 500 {
			s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeJSON(w, status, ErrorBody{Error: err.Error()})
	})
}

func (s *server) status(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, s.c.Status())
}

func (s *server) swap(w http.ResponseWriter, r *http.Request) error {
	var req SwapRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	res, err := s.c.Swap(r.Context(), req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

// decodeBody reads a JSON body into v strictly; an empty body leaves v zero.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("malformed JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))}
	}
	if dec.More() {
		return &Error{Status: http.StatusBadRequest, Err: errors.New("malformed JSON body: more than one value")}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
