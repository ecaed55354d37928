package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vipswap/vipswap/wire"
)

// TestFollowEscapesWhatClientsSent: a failed shadow step names the
// differing requests, whose request lines any client of prod wrote; the
// deploy's output shows their terminal controls escaped, as every other
// command does.
func TestFollowEscapesWhatClientsSent(t *testing.T) {
	now := time.Now()
	hostile := "GET /api/test?a=\u202eb\u009b2J\x1b]0;owned\x07 at $.differ (200 vs 200)"
	p := wire.Progress{Kind: "deploy", ID: "d1", Slot: "green", Version: "2", State: "failed", Started: now, Ended: now,
		FailedStep: "shadow", Error: "shadow to green: differing: " + hostile, Kept: "kept: " + hostile,
		Steps: []wire.Step{{Name: "shadow", Result: "failed", Detail: "differing: " + hostile}}}
	var out bytes.Buffer
	err := follow(context.Background(), newClient("127.0.0.1:1"), p, false, &out)
	if err == nil {
		t.Fatal("a failed deploy was followed without an error")
	}
	for _, bad := range []string{"\u202e", "\u009b", "\x1b", "\x07"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("the output carries %q raw: %q", bad, out.String())
		}
	}
	if !strings.Contains(out.String(), `\u202e`) {
		t.Errorf("output %q: want the controls shown escaped", out.String())
	}
}
