package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeController stands in for the controller, which has its own tests; here
// only the HTTP mapping is under test.
type fakeController struct {
	swapErr error
	got     []SwapRequest
}

func (f *fakeController) Status() Status {
	return Status{Revision: 7, Active: "blue", Standby: "green"}
}

func (f *fakeController) Swap(_ context.Context, r SwapRequest) (SwapResult, error) {
	f.got = append(f.got, r)
	if f.swapErr != nil {
		return SwapResult{}, f.swapErr
	}
	return SwapResult{From: "blue", To: "green", Revision: 8}, nil
}

func call(t *testing.T, h http.Handler, method, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: body is not JSON: %q", method, path, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return rec.Code, out
}

func TestEndpoints(t *testing.T) {
	fc := &fakeController{}
	h := NewHandler(fc, nil)
	cases := []struct {
		name, method, path, body string
		status                   int
		field, want              string
	}{
		{"status", "GET", "/v1/status", "", 200, "active", "blue"},
		{"swap with empty body", "POST", "/v1/swap", "", 200, "to", "green"},
		{"swap with force", "POST", "/v1/swap", `{"force":true}`, 200, "to", "green"},
		{"malformed JSON", "POST", "/v1/swap", `{"force":`, 400, "error", "malformed JSON body"},
		{"unknown field", "POST", "/v1/swap", `{"forse":true}`, 400, "error", `unknown field "forse"`},
		{"wrong type", "POST", "/v1/swap", `{"force":"yes"}`, 400, "error", "malformed JSON body"},
		{"two values", "POST", "/v1/swap", `{} {}`, 400, "error", "more than one value"},
		{"unknown endpoint", "GET", "/v1/nope", "", 404, "error", "no such endpoint"},
		{"wrong method", "GET", "/v1/swap", "", 404, "error", "no such endpoint"},
		{"liveness", "GET", "/healthz", "", 200, "status", "ok"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := call(t, h, c.method, c.path, c.body)
			if code != c.status {
				t.Fatalf("status %d, want %d (%v)", code, c.status, out)
			}
			if got, _ := out[c.field].(string); !strings.Contains(got, c.want) {
				t.Fatalf("%s = %q, want it to contain %q", c.field, got, c.want)
			}
		})
	}
	if len(fc.got) != 2 || !fc.got[1].Force {
		t.Fatalf("controller saw %+v; malformed requests must not reach it", fc.got)
	}
}

func TestErrorStatus(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
	}{
		{&Error{Status: http.StatusConflict, Err: errors.New("swap refused: no healthy instance")}, 409},
		{errors.New("write state file: disk full"), 500},
	} {
		h := NewHandler(&fakeController{swapErr: c.err}, nil)
		code, out := call(t, h, "POST", "/v1/swap", "")
		if code != c.status || out["error"] != c.err.Error() {
			t.Errorf("got %d %v, want %d with the message", code, out, c.status)
		}
	}
}
