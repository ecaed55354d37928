package api_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

// TestHostileBodies: every body that is too large, not one JSON object, or
// ambiguous is a 400 or 413 with one line naming the problem, and changes
// nothing: no state, no history entry (refusals of the controller are
// recorded; these never reach it).
func TestHostileBodies(t *testing.T) {
	f := newFixture(t, api.Options{})
	drain := "/v1/slots/blue/instances/" + f.blue[0] + "/drain"
	jsonType := map[string]string{"Content-Type": "application/json"}
	huge := `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`
	cases := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"null", "/v1/swap", `null`, 400, "malformed JSON body: want a JSON object, got null"},
		{"an array", "/v1/swap", `[{"force":true}]`, 400, "want a JSON object, got an array"},
		{"a string", drain, `"force"`, 400, "want a JSON object, got a string"},
		{"a number", "/v1/swap", `1`, 400, "want a JSON object, got a number"},
		{"duplicate key", "/v1/swap", `{"force":false,"force":true}`, 400, `key "force" appears twice`},
		{"duplicate key, other case", drain, `{"force":false,"FORCE":true}`, 400, `key "FORCE" appears twice`},
		{"duplicate reason", "/v1/swap", `{"reason":"a","dry_run":true,"reason":"b"}`, 400, `key "reason" appears twice`},
		{"two objects", "/v1/swap", `{} {"force":true}`, 400, "more than one value"},
		{"trailing garbage", "/v1/swap", `{}x`, 400, "malformed JSON body"},
		{"truncated", "/v1/swap", `{"force":true`, 400, "malformed JSON body"},
		{"unknown field", "/v1/swap", `{"force":true,"actor":"admin"}`, 400, `unknown field "actor"`},
		{"wrong type", "/v1/swap", `{"if_revision":-1}`, 400, "malformed JSON body"},
		{"body over 64 KiB", "/v1/swap", huge, 413, "request body is larger than 64 KiB"},
		{"reason over 1 KiB", "/v1/swap", `{"reason":"` + strings.Repeat("é", 513) + `"}`, 400, "reason is 1026 bytes long; at most 1024 are allowed"},
		{"reason over 1 KiB on a drain", drain, `{"force":true,"reason":"` + strings.Repeat("x", 1025) + `"}`, 400, "reason is 1025 bytes long"},
		{"deep nesting", "/v1/swap", `{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, 400, "malformed JSON body"},
	}
	check := f.snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, msg := f.raw(t, "POST", c.path, jsonType, c.body)
			if status != c.status || !strings.Contains(msg, c.want) {
				t.Fatalf("%d %q, want %d and %q", status, msg, c.status, c.want)
			}
			if len(msg) > 300 {
				t.Fatalf("the message is %d bytes: it echoes the input", len(msg))
			}
		})
	}
	check()

	// Exactly at the bounds is fine, and recorded in full.
	reason := strings.Repeat("r", api.MaxReason)
	var res wire.Change
	if code := f.call(t, "POST", "/v1/swap", "", fmt.Sprintf(`{"reason":%q}`, reason), &res); code != 200 {
		t.Fatalf("a %d-byte reason: %d", api.MaxReason, code)
	}
	var e wire.HistoryEntry
	f.call(t, "GET", fmt.Sprint("/v1/history/", res.HistoryID), "", "", &e)
	if e.Reason != reason {
		t.Fatalf("recorded reason has %d bytes, want %d", len(e.Reason), len(reason))
	}
}

// A token file line longer than a scanner's buffer does not end the file
// silently: the tokens after it count, and so do its rules.
func TestLongTokenFileLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	data := "bob secret-number-one-0123\n#" + strings.Repeat("x", 70<<10) + "\nalice secret-number-one-0123\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := api.LoadTokens(path); err == nil || !strings.Contains(err.Error(), "same secret") {
		t.Fatalf("LoadTokens: %v, want the shared secret after the long line refused", err)
	}
}
