package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// redraw (rollout status --watch, shadow status --watch) prints a frame
// per fetch until interrupted, which is a clean end, and stops at the
// first failed fetch with its error.
func TestRedraw(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	err := redraw(ctx, &out, func(context.Context) (func(io.Writer), error) {
		n++
		if n == 3 {
			cancel() // interrupted while fetching the third frame
		}
		return func(w io.Writer) { io.WriteString(w, "frame\n") }, nil
	})
	if err != nil || strings.Count(out.String(), "frame\n") != 2 || strings.Count(out.String(), "Ctrl-C stops") != 2 {
		t.Fatalf("interrupted redraw: %v, output:\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "\033[") {
		t.Errorf("not a terminal, yet the screen was cleared:\n%q", out.String())
	}
	broken := errors.New("admin API unreachable")
	out.Reset()
	err = redraw(context.Background(), &out, func(context.Context) (func(io.Writer), error) { return nil, broken })
	if !errors.Is(err, broken) || out.Len() != 0 {
		t.Fatalf("failed fetch: %v, output %q; want the error and nothing drawn", err, out.String())
	}
}
