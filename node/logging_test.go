package node

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/config"
)

func TestLoggerFollowsConfig(t *testing.T) {
	var b strings.Builder
	log := newLogger(config.Log{Format: "json", Level: "warn"}, &b)
	log.Info("not shown")
	log.Warn("state changed", "revision", 7, "actor", "ci")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want only the warning:\n%s", len(lines), b.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %q", lines[0])
	}
	if rec["msg"] != "state changed" || rec["revision"] != 7.0 || rec["actor"] != "ci" {
		t.Fatalf("record %v", rec)
	}
	if accessLog(config.Log{Access: false}, log) != nil {
		t.Fatal("access log on while log.access is false")
	}
	if a := accessLog(config.Log{Access: true, AccessSample: 0.1}, log); a == nil || a.Sample != 0.1 {
		t.Fatalf("access log %+v, want one sampling 0.1", a)
	}
}
