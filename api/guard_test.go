package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

// raw sends one request with the given headers (Host among them) and
// returns the status and the decoded error message.
func (f *fixture) raw(t *testing.T, method, path string, headers map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var eb wire.ErrorBody
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(data, &eb); err != nil || eb.Error == "" || strings.Contains(eb.Error, "\n") {
			t.Fatalf("%s %s: error answer %d is not one line of JSON: %q", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, eb.Error
}

// unchanged fails the test if the state revision or the history moved
// since snapshot was taken.
func (f *fixture) snapshot(t *testing.T) func() {
	t.Helper()
	rev := f.ctrl.Status().Revision
	h, err := f.ctrl.History(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		after, _ := f.ctrl.History(context.Background(), 0, 0)
		if got := f.ctrl.Status().Revision; got != rev || len(after) != len(h) {
			t.Fatalf("refused requests changed something: revision %d -> %d, history %d -> %d entries", rev, got, len(h), len(after))
		}
	}
}

// TestBrowserGuard: requests a web page could make from an operator's
// browser are refused before they reach the controller, with one line
// saying why; the CLI's and the dashboard's requests pass.
func TestBrowserGuard(t *testing.T) {
	f := newFixture(t, api.Options{Hosts: []string{"Vipswap.Internal"}})
	port := f.url[strings.LastIndex(f.url, ":")+1:]
	json := "application/json"
	cases := []struct {
		name, method, path string
		headers            map[string]string
		status             int
		want               string
	}{
		{"DNS rebinding: a name of the attacker's", "GET", "/v1/status", map[string]string{"Host": "evil.example:" + port}, 403, `host "evil.example:` + port + `" is not allowed`},
		{"DNS rebinding swap", "POST", "/v1/swap", map[string]string{"Host": "evil.example:" + port, "Content-Type": json}, 403, "not allowed"},
		{"a name ending like an IP", "GET", "/v1/status", map[string]string{"Host": "127.0.0.1.evil.example"}, 403, "not allowed"},
		{"a name starting with localhost", "GET", "/healthz", map[string]string{"Host": "localhost.evil.example:" + port}, 403, "not allowed"},
		{"the dashboard to a rebinding page", "GET", "/", map[string]string{"Host": "evil.example"}, 403, "not allowed"},
		{"cross-origin no-cors fetch", "POST", "/v1/swap", map[string]string{"Origin": "http://127.0.0.1:1", "Content-Type": "text/plain;charset=UTF-8"}, 403, `origin "http://127.0.0.1:1" is not this admin address`},
		{"cross-origin with JSON", "POST", "/v1/swap", map[string]string{"Origin": "http://evil.example", "Content-Type": json}, 403, "cross-origin request refused"},
		{"opaque origin", "POST", "/v1/rollback", map[string]string{"Origin": "null", "Content-Type": json}, 403, `origin "null"`},
		{"same host, other scheme", "POST", "/v1/swap", map[string]string{"Origin": "ftp://127.0.0.1:" + port, "Content-Type": json}, 403, "cross-origin"},
		{"cross-origin read", "GET", "/v1/history", map[string]string{"Origin": "http://localhost:1"}, 403, "cross-origin"},
		{"form post", "POST", "/v1/swap", map[string]string{"Content-Type": "text/plain"}, 415, `changes need Content-Type: application/json (got "text/plain")`},
		{"urlencoded form drain", "POST", "/v1/slots/blue/instances/" + f.blue[0] + "/drain", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"},
		{"no content type", "POST", "/v1/swap", nil, 415, `(got "")`},
		{"a JSON-ish type", "POST", "/v1/swap", map[string]string{"Content-Type": "application/json-patch+json"}, 415, "application/json"},
	}
	check := f.snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := ""
			if c.method == "POST" {
				body = `{"force":true}`
			}
			status, msg := f.raw(t, c.method, c.path, c.headers, body)
			if status != c.status || !strings.Contains(msg, c.want) {
				t.Fatalf("%d %q, want %d and %q", status, msg, c.status, c.want)
			}
		})
	}
	check()

	for _, ok := range []struct {
		name    string
		headers map[string]string
	}{
		{"the CLI", map[string]string{"Content-Type": "application/json"}},
		{"the dashboard, same origin", map[string]string{"Origin": "http://127.0.0.1:" + port, "Content-Type": "application/json; charset=utf-8"}},
		{"localhost", map[string]string{"Host": "LOCALHOST:" + port, "Origin": "http://localhost:" + port, "Content-Type": "application/json"}},
		{"a name in admin.hosts", map[string]string{"Host": "vipswap.internal:" + port, "Origin": "https://vipswap.internal:" + port, "Content-Type": "application/json"}},
		{"IPv6 literal", map[string]string{"Host": "[::1]:" + port, "Content-Type": "application/json"}},
	} {
		if status, msg := f.raw(t, "POST", "/v1/swap", ok.headers, `{"dry_run":true}`); status != 200 {
			t.Errorf("%s: %d %s, want 200", ok.name, status, msg)
		}
	}
	if status, _ := f.raw(t, "POST", "/v1/swap", map[string]string{"Content-Type": "application/json"}, ""); status != 200 {
		t.Fatalf("an empty body with the JSON type: %d, want 200", status)
	}
}
