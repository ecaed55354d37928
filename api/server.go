// Package api is vipswap's admin HTTP API, versioned under /v1/: its wire
// types, its server and its authentication. It reaches the controller
// through the narrow Controller interface it declares, and renders every
// error as JSON {"error": "..."} in one place.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/wire"
)

// Controller is what the admin API needs from the controller. Methods are
// called concurrently. Errors that are the caller's to fix are
// *control.Error values, answered with the 4xx status of their kind; any
// other error is a 500.
type Controller interface {
	// Status returns the routing state and every instance's counters.
	Status() wire.Status
	// Swap exchanges active and standby.
	Swap(ctx context.Context, req wire.ChangeRequest) (wire.Change, error)
	// ShiftPercent moves a share of prod to a slot.
	ShiftPercent(ctx context.Context, req wire.ShiftRequest) (wire.Change, error)
	// StartRolloutRequest starts a rollout.
	StartRolloutRequest(ctx context.Context, req wire.RolloutRequest) (wire.Change, error)
	// RolloutStatus returns the running rollout and its analysis.
	RolloutStatus() wire.RolloutStatus
	// PromoteRequest continues (or completes) a paused rollout.
	PromoteRequest(ctx context.Context, req wire.PromoteRequest) (wire.Change, error)
	// Abort sends all of prod back to the active slot and ends a rollout.
	Abort(ctx context.Context, req wire.ChangeRequest) (wire.Change, error)
	// AddSlot adds a slot at runtime.
	AddSlot(ctx context.Context, req wire.AddSlotRequest) (wire.Change, error)
	// RemoveSlot removes a slot.
	RemoveSlot(ctx context.Context, slot string, req wire.ChangeRequest) (wire.Change, error)
	// SetRoute adds or replaces a version route.
	SetRoute(ctx context.Context, req wire.RouteRequest) (wire.Change, error)
	// RemoveRoute removes a version route set through the API.
	RemoveRoute(ctx context.Context, req wire.RouteRequest) (wire.Change, error)
	// SetStage chooses the slot stage follows.
	SetStage(ctx context.Context, req wire.StageRequest) (wire.Change, error)
	// StartShadow starts copying a sample of prod's requests to a slot.
	StartShadow(ctx context.Context, req wire.ShadowRequest) (wire.Change, error)
	// StopShadow ends the running shadow.
	StopShadow(ctx context.Context, req wire.ChangeRequest) (wire.Change, error)
	// Shadow returns the running shadow and its figures, nil when none.
	Shadow() *wire.Shadow
	// Rollback makes the previously active slot active again.
	Rollback(ctx context.Context, req wire.ChangeRequest) (wire.Change, error)
	// Drain stops sending new requests to one instance.
	Drain(ctx context.Context, slot, addr string, req wire.ChangeRequest) (wire.Change, error)
	// Ready undoes Drain.
	Ready(ctx context.Context, slot, addr string, req wire.ChangeRequest) (wire.Change, error)
	// History returns up to limit entries whose ID is below before (0:
	// from the newest), newest first.
	History(ctx context.Context, before uint64, limit int) ([]wire.HistoryEntry, error)
	// Entry returns one history entry.
	Entry(ctx context.Context, id uint64) (wire.HistoryEntry, error)
	// Readiness returns nil when vipswap is ready to route traffic.
	Readiness(ctx context.Context) error
	// Events returns the events after seq, and a channel closed at the
	// next one.
	Events(seq uint64) (wire.Events, <-chan struct{})
	// LastEvent returns the newest event's number.
	LastEvent() uint64
}

// Releases runs deploys and rolling updates (package release).
type Releases interface {
	// Deploy starts a deploy.
	Deploy(req wire.DeployRequest) (wire.Progress, error)
	// Rolling starts a rolling update.
	Rolling(req wire.RollingRequest) (wire.Progress, error)
	// Get returns a release's progress.
	Get(id string) (wire.Progress, bool)
	// List returns the recent releases, newest first.
	List() []wire.Progress
}

// Error is an error with the HTTP status the API answers it with.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Err is the underlying error; its message is shown to the caller.
	Err error
	// Revision, when not zero, is the current state revision, shown on a
	// 409 so the caller can retry against it.
	Revision uint64
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// statusOf maps the controller's error kinds to HTTP statuses.
var statusOf = map[control.Kind]int{
	control.Invalid:     http.StatusBadRequest,
	control.NotFound:    http.StatusNotFound,
	control.Conflict:    http.StatusConflict,
	control.Unavailable: http.StatusServiceUnavailable,
}

// Options configures the API server.
type Options struct {
	// Tokens are the accepted bearer tokens. With none (or nil), every
	// call is allowed and recorded as actor "local".
	Tokens *TokenSet
	// ProtectReads requires a token for reads too, not only for changes.
	// vipswap sets it when the admin address is not loopback.
	ProtectReads bool
	// Logger receives server errors. Nil means slog.Default().
	Logger *slog.Logger
	// Metrics, if set, serves GET /metrics (a read: it needs a token when
	// reads are protected).
	Metrics http.Handler
	// Rates, if set, serves GET /v1/rates.
	Rates func() []wire.RateSample
	// Dashboard, if set, serves GET / (a page with no data of its own: it
	// reads the API with the operator's token, so it needs none itself).
	Dashboard http.Handler
	// Reload, if set, serves POST /v1/reload: re-read the configuration
	// file and apply what changed (a dry run says what would).
	Reload func(ctx context.Context, req wire.ChangeRequest) (wire.Change, error)
	// Upgrade, if set, serves POST /v1/upgrade: start a new vipswap
	// process, hand it the listening sockets and, once it is ready, stop
	// this one. It answers when the new process is ready, or why not.
	Upgrade func(ctx context.Context, req wire.UpgradeRequest) (wire.UpgradeResult, error)
	// Releases, if set, serves POST /v1/deploy, POST /v1/rolling and GET
	// /v1/releases[/{id}].
	Releases Releases
	// Hosts are the host names, besides IP addresses and localhost, that
	// requests may name in their Host header (admin.hosts). Any other name
	// is refused with a 403, which stops DNS-rebinding pages.
	Hosts []string
	// EventWaiters bounds the requests that wait in GET /v1/events at
	// once (at most, and by default, 64): each holds a connection, and
	// the admin API must keep some for everything else.
	EventWaiters int
	// Stopping, once closed, answers the requests waiting in GET
	// /v1/events at once (a 503): the server is shutting down, and a
	// long poll must hold up neither the stop nor its caller.
	Stopping <-chan struct{}
}

// Default and largest page of GET /v1/history.
const (
	defaultHistory = 50
	maxHistory     = 1000
)

// GET /v1/events waits at most maxEventWait (under the admin server's
// write timeout), and at most maxEventWaiters requests wait at once: the
// others are answered 503 at once, so waiters cannot take every admin
// connection.
const (
	maxEventWait    = 25 * time.Second
	maxEventWaiters = 64
)

// NewHandler returns the admin API handler.
func NewHandler(c Controller, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	waiters := maxEventWaiters
	if opts.EventWaiters > 0 {
		waiters = min(opts.EventWaiters, maxEventWaiters)
	}
	s := &server{c: c, log: opts.Logger, waiters: make(chan struct{}, waiters), stopping: opts.Stopping, auth: authenticator{tokens: opts.Tokens, protectReads: opts.ProtectReads}}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/status", s.handle(s.status))
	mux.Handle("POST /v1/swap", s.handle(s.change(c.Swap)))
	mux.Handle("POST /v1/rollback", s.handle(s.change(c.Rollback)))
	mux.Handle("POST /v1/shift", s.handle(typedChange(c.ShiftPercent, func(b *wire.ShiftRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("POST /v1/rollout", s.handle(typedChange(c.StartRolloutRequest, func(b *wire.RolloutRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("GET /v1/rollout", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, c.RolloutStatus())
	}))
	mux.Handle("POST /v1/promote", s.handle(typedChange(c.PromoteRequest, func(b *wire.PromoteRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("POST /v1/abort", s.handle(s.change(c.Abort)))
	mux.Handle("POST /v1/slots", s.handle(typedChange(c.AddSlot, func(b *wire.AddSlotRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("DELETE /v1/slots/{slot}", s.handle(s.instanceChange(func(ctx context.Context, slot, _ string, req wire.ChangeRequest) (wire.Change, error) {
		return c.RemoveSlot(ctx, slot, req)
	})))
	mux.Handle("POST /v1/routes", s.handle(typedChange(c.SetRoute, func(b *wire.RouteRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("DELETE /v1/routes", s.handle(typedChange(c.RemoveRoute, func(b *wire.RouteRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("POST /v1/stage", s.handle(typedChange(c.SetStage, func(b *wire.StageRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("POST /v1/shadow", s.handle(typedChange(c.StartShadow, func(b *wire.ShadowRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	mux.Handle("DELETE /v1/shadow", s.handle(s.change(c.StopShadow)))
	mux.Handle("GET /v1/shadow", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, c.Shadow())
	}))
	mux.Handle("POST /v1/slots/{slot}/instances/{addr}/drain", s.handle(s.instanceChange(c.Drain)))
	mux.Handle("POST /v1/slots/{slot}/instances/{addr}/ready", s.handle(s.instanceChange(c.Ready)))
	if opts.Reload != nil {
		mux.Handle("POST /v1/reload", s.handle(s.change(opts.Reload)))
	}
	if opts.Upgrade != nil {
		mux.Handle("POST /v1/upgrade", s.handle(typedCall(http.StatusOK, opts.Upgrade, func(b *wire.UpgradeRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
	}
	if rs := opts.Releases; rs != nil {
		mux.Handle("POST /v1/deploy", s.handle(startRelease(rs.Deploy, func(b *wire.DeployRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
		mux.Handle("POST /v1/rolling", s.handle(startRelease(rs.Rolling, func(b *wire.RollingRequest) *wire.ChangeRequest { return &b.ChangeRequest })))
		mux.Handle("GET /v1/releases", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			return writeJSON(w, http.StatusOK, rs.List())
		}))
		mux.Handle("GET /v1/releases/{id}", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			p, ok := rs.Get(r.PathValue("id"))
			if !ok {
				return &Error{Status: http.StatusNotFound, Err: fmt.Errorf("no release %q (vipswap remembers its recent releases since it started)", r.PathValue("id"))}
			}
			return writeJSON(w, http.StatusOK, p)
		}))
	}
	mux.Handle("GET /v1/events", s.handle(s.events))
	mux.Handle("GET /v1/history", s.handle(s.history))
	mux.Handle("GET /v1/history/{id}", s.handle(s.entry))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /readyz", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := c.Readiness(r.Context()); err != nil {
			return &Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("not ready: %w", err)}
		}
		body := map[string]string{"status": "ready", "store": "reachable"}
		if st := c.Status().Store; !st.Reachable {
			body["store"] = "unreachable since " + st.Since.Format(time.RFC3339) + ": " + st.Error
		}
		if n := c.Status().Store.NotApplied; n != nil {
			body["stored_state"] = fmt.Sprintf("not applied since %s (revision %d): %s", n.Since.Format(time.RFC3339), n.Revision, n.Error)
		}
		return writeJSON(w, http.StatusOK, body)
	}))
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			opts.Metrics.ServeHTTP(w, r)
			return nil
		}))
	}
	if opts.Rates != nil {
		mux.Handle("GET /v1/rates", s.handle(func(w http.ResponseWriter, r *http.Request) error {
			return writeJSON(w, http.StatusOK, wire.Rates{Samples: opts.Rates()})
		}))
	}
	if opts.Dashboard != nil {
		mux.Handle("GET /{$}", opts.Dashboard)
		mux.Handle("GET /dashboard/", opts.Dashboard)
	}
	mux.Handle("/", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return &Error{Status: http.StatusNotFound, Err: fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path)}
	}))
	return newGuard(opts.Hosts, mux)
}

type server struct {
	c        Controller
	log      *slog.Logger
	auth     authenticator
	waiters  chan struct{}   // a token per request waiting in GET /v1/events
	stopping <-chan struct{} // closed when the server shuts down; nil: never
}

type actorKey struct{}

// handle authenticates the request, then runs h and renders its error as
// JSON.
func (s *server) handle(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		actor, ok := s.auth.check(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vipswap"`)
			writeJSON(w, http.StatusUnauthorized, wire.ErrorBody{Error: "unauthorized"})
			return
		}
		err := h(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, actor)))
		if err == nil {
			return
		}
		body := wire.ErrorBody{Error: err.Error()}
		status := http.StatusInternalServerError
		var apiErr *Error
		var ctlErr *control.Error
		switch {
		case errors.As(err, &apiErr):
			status, body.Revision = apiErr.Status, apiErr.Revision
		case errors.As(err, &ctlErr):
			status, body.Revision = statusOf[ctlErr.Kind], ctlErr.Revision
		}
		if status >= 500 {
			s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeJSON(w, status, body)
	})
}

func (s *server) status(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, s.c.Status())
}

// change adapts a slot-level change (swap, rollback) to HTTP.
func (s *server) change(op func(context.Context, wire.ChangeRequest) (wire.Change, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		req, err := changeRequest(w, r)
		if err != nil {
			return err
		}
		res, err := op(r.Context(), req)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, res)
	}
}

// typedChange adapts a change with a body of its own (shift, rollout,
// promote) to HTTP: B embeds ChangeRequest, which get points to.
func typedChange[B any](op func(context.Context, B) (wire.Change, error), get func(*B) *wire.ChangeRequest) func(http.ResponseWriter, *http.Request) error {
	return typedCall(http.StatusOK, op, get)
}

// startRelease adapts the start of a release to HTTP: 202 with its
// progress, to follow at GET /v1/releases/{id}. The release does not end
// with the request: it runs inside vipswap.
func startRelease[B any](start func(B) (wire.Progress, error), get func(*B) *wire.ChangeRequest) func(http.ResponseWriter, *http.Request) error {
	return typedCall(http.StatusAccepted, func(_ context.Context, b B) (wire.Progress, error) { return start(b) }, get)
}

// typedCall decodes a body B that embeds ChangeRequest (get points to
// it), checks its reason, sets its actor, and answers op's result with
// status.
func typedCall[B, R any](status int, op func(context.Context, B) (R, error), get func(*B) *wire.ChangeRequest) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body B
		if err := decodeBody(w, r, &body); err != nil {
			return err
		}
		req := get(&body)
		if len(req.Reason) > MaxReason {
			return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("reason is %d bytes long; at most %d are allowed", len(req.Reason), MaxReason)}
		}
		req.Actor, _ = r.Context().Value(actorKey{}).(string)
		res, err := op(r.Context(), body)
		if err != nil {
			return err
		}
		return writeJSON(w, status, res)
	}
}

// instanceChange adapts a change named by its path (drain, ready, slot
// removal) to HTTP.
func (s *server) instanceChange(op func(context.Context, string, string, wire.ChangeRequest) (wire.Change, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		req, err := changeRequest(w, r)
		if err != nil {
			return err
		}
		res, err := op(r.Context(), r.PathValue("slot"), r.PathValue("addr"), req)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, res)
	}
}

func changeRequest(w http.ResponseWriter, r *http.Request) (wire.ChangeRequest, error) {
	var req wire.ChangeRequest
	if err := decodeBody(w, r, &req); err != nil {
		return req, err
	}
	if len(req.Reason) > MaxReason {
		return req, &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("reason is %d bytes long; at most %d are allowed", len(req.Reason), MaxReason)}
	}
	req.Actor, _ = r.Context().Value(actorKey{}).(string)
	return req, nil
}

// events answers GET /v1/events?since=SEQ&wait=DURATION: the events after
// SEQ, waiting up to DURATION for one when there is none yet. Without
// since it answers no event and the number to ask from.
func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	seq := s.c.LastEvent()
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("since: want an event number (a whole number), got %q", v)}
		}
		seq = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxEventWait {
			return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("wait: want a duration from 0s to %s, such as 10s, got %q", maxEventWait, v)}
		}
		wait = d
	}
	evs, next := s.c.Events(seq)
	if len(evs.Events) > 0 || evs.Missed || wait == 0 {
		return writeJSON(w, http.StatusOK, evs)
	}
	select {
	case s.waiters <- struct{}{}:
		defer func() { <-s.waiters }()
	default:
		return &Error{Status: http.StatusServiceUnavailable, Err: fmt.Errorf("%d requests already wait for events: ask again without wait, or later", cap(s.waiters))}
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-next:
		evs, _ = s.c.Events(seq)
	case <-timer.C:
	case <-s.stopping:
		return &Error{Status: http.StatusServiceUnavailable, Err: errors.New("vipswap is stopping: ask again once it is back (events are numbered anew then)")}
	case <-r.Context().Done():
		return nil // the caller left
	}
	return writeJSON(w, http.StatusOK, evs)
}

// history answers a page of the history, newest first, as a JSON array.
// When older entries remain, a Link header names the next page:
// </v1/history?limit=N&before=ID>; rel="next".
func (s *server) history(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := defaultHistory
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxHistory {
			return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("limit: want a whole number from 1 to %d, got %q", maxHistory, v)}
		}
		limit = n
	}
	var before uint64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("before: want a history id (a positive whole number), got %q", v)}
		}
		before = n
	}
	h, err := s.c.History(r.Context(), before, limit+1) // one more tells whether there is a next page
	if err != nil {
		return err
	}
	if len(h) > limit {
		h = h[:limit]
		w.Header().Set("Link", fmt.Sprintf(`</v1/history?limit=%d&before=%d>; rel="next"`, limit, h[limit-1].ID))
	}
	if h == nil {
		h = []wire.HistoryEntry{}
	}
	return writeJSON(w, http.StatusOK, h)
}

func (s *server) entry(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		return &Error{Status: http.StatusBadRequest, Err: fmt.Errorf("history id: want a positive whole number, got %q", r.PathValue("id"))}
	}
	e, err := s.c.Entry(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set(wire.VersionHeader, "v1")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
