package proxy

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/vipswap/vipswap/route"
)

// AccessLog logs requests, all of them or a random sample: one "request"
// record each, with the listener, method, target, status, slot, instance,
// attempts, duration, client and, for failures, what went wrong inside
// (which the client's answer does not say).
type AccessLog struct {
	// Logger receives the records.
	Logger *slog.Logger
	// Sample is the fraction of requests logged, from 0 (none) to 1 (all).
	Sample float64
}

func (a *AccessLog) sampled() bool {
	return a.Sample >= 1 || (a.Sample > 0 && rand.Float64() < a.Sample)
}

func (a *AccessLog) log(l route.Listener, r *http.Request, status int, slot *route.Slot, instance string, attempts int, took time.Duration, detail string) {
	name := route.NoSlot
	if slot != nil {
		name = slot.Name
	}
	attrs := []slog.Attr{
		slog.String("listener", l.String()),
		slog.String("method", r.Method),
		slog.String("uri", r.RequestURI),
		slog.Int("status", status),
		slog.String("slot", name),
		slog.String("instance", instance),
		slog.Int("attempts", attempts),
		slog.Duration("duration", took),
		slog.String("client", r.RemoteAddr),
	}
	if detail != "" {
		attrs = append(attrs, slog.String("error", detail))
	}
	a.Logger.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}
