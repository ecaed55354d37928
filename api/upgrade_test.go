package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

// POST /v1/upgrade: the body's binary and reason reach the node, the
// actor is the server's (never the body's), and broken bodies are refused
// before the node sees them.
func TestUpgradeEndpoint(t *testing.T) {
	var got []wire.UpgradeRequest
	f := newFixture(t, api.Options{
		Upgrade: func(_ context.Context, req wire.UpgradeRequest) (wire.UpgradeResult, error) {
			got = append(got, req)
			return wire.UpgradeResult{OldVersion: "1", NewVersion: "2", Binary: req.Binary}, nil
		},
	})
	var res wire.UpgradeResult
	if code := f.call(t, "POST", "/v1/upgrade", "", `{"binary":"/opt/v2/vipswap","reason":"2.0"}`, &res); code != 200 || res.NewVersion != "2" {
		t.Fatalf("upgrade: %d %+v", code, res)
	}
	if len(got) != 1 || got[0].Binary != "/opt/v2/vipswap" || got[0].Reason != "2.0" || got[0].Actor != "local" {
		t.Fatalf("the node got %+v", got)
	}
	for _, body := range []string{
		`{"binary":`,                      // truncated
		`{"binary":"/x"} {"binary":"/y"}`, // extra bytes
		`{"binary":42}`,                   // wrong type
		`{"reason":"` + strings.Repeat("r", 2000) + `"}`, // oversized reason
		`{"binary":"/x","actor":"mallory"}`,              // the actor is not the body's to say
		`["/opt/v2/vipswap"]`,                            // not an object
	} {
		if code := f.call(t, "POST", "/v1/upgrade", "", body, nil); code != 400 {
			t.Errorf("body %.40q: %d, want 400", body, code)
		}
	}
	if len(got) != 1 {
		t.Fatalf("broken bodies reached the node: %+v", got[1:])
	}
}
