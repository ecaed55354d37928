package node

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/vipswap/vipswap/config"
)

// logSwitch is vipswap's log handler, whose format and level a reload can
// change: every logger derived from it (With, WithGroup) follows.
type logSwitch struct {
	w     io.Writer
	level slog.LevelVar
	base  atomic.Pointer[slog.Handler]
	gen   atomic.Uint64 // bumped by every change of base
}

// newLogSwitch returns a switch set as c says, and the logger on it.
func newLogSwitch(c config.Log, w io.Writer) (*logSwitch, *slog.Logger) {
	sw := &logSwitch{w: w}
	sw.set(c)
	return sw, slog.New(&switchHandler{sw: sw})
}

// newLogger returns a logger as c says.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	_, log := newLogSwitch(c, w)
	return log
}

// set applies c: format and level.
func (sw *logSwitch) set(c config.Log) {
	level, _ := c.SlogLevel() // validated with the configuration
	sw.level.Set(level)
	opts := &slog.HandlerOptions{Level: &sw.level}
	var h slog.Handler = slog.NewTextHandler(sw.w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(sw.w, opts)
	}
	sw.base.Store(&h)
	sw.gen.Add(1)
}

// switchHandler is a handler of the switch with the attributes and groups
// its logger was derived with; it rebuilds its inner handler when the
// switch changes, and otherwise reuses it.
type switchHandler struct {
	sw    *logSwitch
	ops   []func(slog.Handler) slog.Handler // With and WithGroup, in order
	cache atomic.Pointer[built]
}

type built struct {
	gen uint64
	h   slog.Handler
}

func (h *switchHandler) inner() slog.Handler {
	gen := h.sw.gen.Load()
	if b := h.cache.Load(); b != nil && b.gen == gen {
		return b.h
	}
	in := *h.sw.base.Load()
	for _, op := range h.ops {
		in = op(in)
	}
	h.cache.Store(&built{gen: gen, h: in})
	return in
}

func (h *switchHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.sw.level.Level()
}

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner().Handle(ctx, r)
}

func (h *switchHandler) derive(op func(slog.Handler) slog.Handler) slog.Handler {
	ops := append(h.ops[:len(h.ops):len(h.ops)], op)
	return &switchHandler{sw: h.sw, ops: ops}
}

func (h *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.derive(func(in slog.Handler) slog.Handler { return in.WithAttrs(attrs) })
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	return h.derive(func(in slog.Handler) slog.Handler { return in.WithGroup(name) })
}
