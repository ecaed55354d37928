// Package client is the Go client of vipswap's admin API. The vipswap CLI uses
// it, and so can deployment pipelines:
//
//	c := client.New("http://127.0.0.1:9090", client.WithToken(os.Getenv("VIPSWAP_TOKEN")))
//	res, err := c.Swap(ctx, api.ChangeRequest{Reason: "release 2.4"})
//	if client.IsRefused(err) {
//		// the state did not allow it (no healthy instance, stale if_revision)
//	}
//
// Every method returns an *Error for an error answer of the API, and a plain
// error when the API could not be reached.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vipswap/vipswap/wire"
)

// Client calls one vipswap admin API. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
	err   error // an option's failure, returned by every call
}

// Option tunes a Client.
type Option func(*Client)

// WithToken sends token as a bearer token on every call; empty means none.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient replaces the HTTP client (default: 30s timeout, no proxy).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithCAFile trusts the CA certificates in the PEM file at path, instead
// of the system's, for an admin API served over https (admin.tls). Empty
// means the system's. A file that cannot be read, or holds no
// certificate, makes every call fail with that error. It applies to the
// default HTTP client, not to one given by WithHTTPClient.
func WithCAFile(path string) Option {
	return func(c *Client) {
		if path == "" {
			return
		}
		raw, err := readCAFile(path)
		if err != nil {
			c.err = fmt.Errorf("the admin API's CA: %w", err)
			return
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw) {
			c.err = fmt.Errorf("the admin API's CA: %s holds no PEM certificate", path)
			return
		}
		if t, ok := c.http.Transport.(*http.Transport); ok {
			t = t.Clone()
			t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			h := *c.http
			h.Transport = t
			c.http = &h
		}
	}
}

// maxCAFile bounds a CA file: a bundle of the public CAs is about 200 KiB.
const maxCAFile = 1 << 20

// readCAFile reads a CA file of at most maxCAFile bytes. It is looked at
// before it is opened and read: opening a FIFO would wait for a writer,
// and a device such as /dev/zero never ends.
func readCAFile(path string) ([]byte, error) {
	bad := fmt.Errorf("%s: want a regular file of at most %d bytes", path, maxCAFile)
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() || st.Size() > maxCAFile {
		return nil, bad
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxCAFile+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxCAFile {
		return nil, bad
	}
	return raw, nil
}

// New returns a client of the admin API at baseURL, such as
// "http://127.0.0.1:9090".
func New(baseURL string, opts ...Option) *Client {
	c := &Client{
		base: strings.TrimRight(baseURL, "/"),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Error is an error answer from the API.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is the API's one-line explanation.
	Message string
	// Revision is the current state revision on a 409 caused by a
	// concurrent change or a stale if_revision; zero otherwise.
	Revision uint64
}

func (e *Error) Error() string { return e.Message }

// IsRefused reports whether err is the API refusing an operation because of
// the current state (HTTP 409), as opposed to a failure.
func IsRefused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusConflict
}

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (wire.Status, error) {
	var s wire.Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Rates returns GET /v1/rates: per-slot request and error rates, one sample
// a second, oldest first.
func (c *Client) Rates(ctx context.Context) (wire.Rates, error) {
	var r wire.Rates
	err := c.do(ctx, http.MethodGet, "/v1/rates", nil, &r)
	return r, err
}

// Swap calls POST /v1/swap.
func (c *Client) Swap(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/swap", req, &res)
	return res, err
}

// Rollback calls POST /v1/rollback.
func (c *Client) Rollback(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/rollback", req, &res)
	return res, err
}

// Shift calls POST /v1/shift: req.To gets req.Weight percent of prod.
func (c *Client) Shift(ctx context.Context, req wire.ShiftRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/shift", req, &res)
	return res, err
}

// StartRollout calls POST /v1/rollout.
func (c *Client) StartRollout(ctx context.Context, req wire.RolloutRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/rollout", req, &res)
	return res, err
}

// Rollout calls GET /v1/rollout: the running rollout and its analysis.
func (c *Client) Rollout(ctx context.Context) (wire.RolloutStatus, error) {
	var res wire.RolloutStatus
	err := c.do(ctx, http.MethodGet, "/v1/rollout", nil, &res)
	return res, err
}

// Promote calls POST /v1/promote.
func (c *Client) Promote(ctx context.Context, req wire.PromoteRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/promote", req, &res)
	return res, err
}

// Abort calls POST /v1/abort: all of prod back to the active slot, the
// rollout ended.
func (c *Client) Abort(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/abort", req, &res)
	return res, err
}

// AddSlot calls POST /v1/slots: a slot added at runtime.
func (c *Client) AddSlot(ctx context.Context, req wire.AddSlotRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/slots", req, &res)
	return res, err
}

// RemoveSlot calls DELETE /v1/slots/{slot}.
func (c *Client) RemoveSlot(ctx context.Context, slot string, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodDelete, "/v1/slots/"+url.PathEscape(slot), req, &res)
	return res, err
}

// SetRoute calls POST /v1/routes: a version route added, or replacing the
// one that matches the same requests.
func (c *Client) SetRoute(ctx context.Context, req wire.RouteRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/routes", req, &res)
	return res, err
}

// RemoveRoute calls DELETE /v1/routes.
func (c *Client) RemoveRoute(ctx context.Context, req wire.RouteRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodDelete, "/v1/routes", req, &res)
	return res, err
}

// SetStage calls POST /v1/stage: stage follows req.Slot.
func (c *Client) SetStage(ctx context.Context, req wire.StageRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/stage", req, &res)
	return res, err
}

// Reload calls POST /v1/reload: the running vipswap re-reads its
// configuration file and applies what changed (a dry run says what would).
func (c *Client) Reload(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/reload", req, &res)
	return res, err
}

// Upgrade calls POST /v1/upgrade: it answers once the new process is
// ready, or with why it is not (the old one goes on serving).
func (c *Client) Upgrade(ctx context.Context, req wire.UpgradeRequest) (wire.UpgradeResult, error) {
	var res wire.UpgradeResult
	err := c.do(ctx, http.MethodPost, "/v1/upgrade", req, &res)
	return res, err
}

// Drain calls POST /v1/slots/{slot}/instances/{addr}/drain.
func (c *Client) Drain(ctx context.Context, slot, addr string, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, instancePath(slot, addr, "drain"), req, &res)
	return res, err
}

// Ready calls POST /v1/slots/{slot}/instances/{addr}/ready.
func (c *Client) Ready(ctx context.Context, slot, addr string, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, instancePath(slot, addr, "ready"), req, &res)
	return res, err
}

// History calls GET /v1/history; limit 0 means the server's default (50).
func (c *Client) History(ctx context.Context, limit int) ([]wire.HistoryEntry, error) {
	h, _, err := c.HistoryPage(ctx, 0, limit)
	return h, err
}

// HistoryPage calls GET /v1/history?before=BEFORE&limit=LIMIT: up to limit
// entries older than entry before (0: from the newest), newest first; limit
// 0 means the server's default (50). next is the before of the following
// page, or 0 when no older entry remains.
func (c *Client) HistoryPage(ctx context.Context, before uint64, limit int) (h []wire.HistoryEntry, next uint64, err error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if before > 0 {
		q.Set("before", strconv.FormatUint(before, 10))
	}
	path := "/v1/history"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	header, err := c.send(ctx, http.MethodGet, path, nil, &h)
	if err != nil {
		return nil, 0, err
	}
	if m := nextRE.FindStringSubmatch(header.Get("Link")); m != nil {
		next, _ = strconv.ParseUint(m[1], 10, 64)
	}
	return h, next, nil
}

// nextRE finds the cursor in GET /v1/history's Link header.
var nextRE = regexp.MustCompile(`<[^>]*[?&]before=(\d+)[^>]*>;\s*rel="next"`)

// Events calls GET /v1/events?since=SEQ&wait=WAIT: the events after seq,
// waiting up to wait (at most 25s) for one when there is none yet.
func (c *Client) Events(ctx context.Context, seq uint64, wait time.Duration) (wire.Events, error) {
	q := url.Values{}
	q.Set("since", strconv.FormatUint(seq, 10))
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var evs wire.Events
	err := c.do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &evs)
	return evs, err
}

// LastEvent calls GET /v1/events without since: the newest event's
// number, to wait for the events after it.
func (c *Client) LastEvent(ctx context.Context) (uint64, error) {
	var evs wire.Events
	err := c.do(ctx, http.MethodGet, "/v1/events", nil, &evs)
	return evs.Next, err
}

// Entry calls GET /v1/history/{id}.
func (c *Client) Entry(ctx context.Context, id uint64) (wire.HistoryEntry, error) {
	var e wire.HistoryEntry
	err := c.do(ctx, http.MethodGet, "/v1/history/"+strconv.FormatUint(id, 10), nil, &e)
	return e, err
}

func instancePath(slot, addr, verb string) string {
	return "/v1/slots/" + url.PathEscape(slot) + "/instances/" + url.PathEscape(addr) + "/" + verb
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.send(ctx, method, path, in, out)
	return err
}

// send makes one call and returns the answer's header. Every call but GET
// and HEAD carries Content-Type: application/json, an empty body included:
// the server refuses changes without it (a browser's cross-site form could
// not send it).
func (c *Client) send(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	if c.err != nil {
		return nil, c.err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("admin API %s: %w", c.base, err)
	}
	if method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s: %w", c.base, unwrapURL(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("admin API %s: read answer: %w", c.base, err)
	}
	if resp.Header.Get(wire.VersionHeader) == "" {
		if resp.StatusCode == http.StatusBadRequest && strings.HasPrefix(c.base, "http://") &&
			bytes.Contains(raw, []byte("HTTP request to an HTTPS server")) {
			// Go's TLS server's answer to cleartext: the admin API has
			// admin.tls, and a bare host:port means http.
			return nil, &Error{StatusCode: resp.StatusCode, Message: fmt.Sprintf(
				"the admin API at %s speaks HTTPS: name it https://%s (--admin or VIPSWAP_ADMIN)",
				c.base, strings.TrimPrefix(c.base, "http://"))}
		}
		// Not vipswap: a prod listener, another service, a proxy's error
		// page. Its 200 must not pass for a change that was applied.
		return nil, &Error{StatusCode: resp.StatusCode, Message: fmt.Sprintf(
			"admin API at %s answered %s to %s %s, but not as vipswap does: is this vipswap's admin address? (--admin or VIPSWAP_ADMIN)",
			c.base, resp.Status, method, path)}
	}
	if resp.StatusCode >= 300 {
		var eb wire.ErrorBody
		if json.Unmarshal(raw, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("admin API at %s answered %s", c.base, resp.Status)
			if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
				eb.Error += " to " + method + " " + path + ": is this vipswap's admin address?"
			}
		}
		return nil, &Error{StatusCode: resp.StatusCode, Message: eb.Error, Revision: eb.Revision}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("admin API %s: unreadable answer: %w", c.base, err)
	}
	return resp.Header, nil
}

// unwrapURL drops the *url.Error wrapper, whose message repeats the URL.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Deploy calls POST /v1/deploy: the deploy starts, and GET
// /v1/releases/{id} follows it (Release).
func (c *Client) Deploy(ctx context.Context, req wire.DeployRequest) (wire.Progress, error) {
	var res wire.Progress
	err := c.do(ctx, http.MethodPost, "/v1/deploy", req, &res)
	return res, err
}

// Rolling calls POST /v1/rolling: the rolling update starts, and Release
// follows it.
func (c *Client) Rolling(ctx context.Context, req wire.RollingRequest) (wire.Progress, error) {
	var res wire.Progress
	err := c.do(ctx, http.MethodPost, "/v1/rolling", req, &res)
	return res, err
}

// Release calls GET /v1/releases/{id}.
func (c *Client) Release(ctx context.Context, id string) (wire.Progress, error) {
	var res wire.Progress
	err := c.do(ctx, http.MethodGet, "/v1/releases/"+url.PathEscape(id), nil, &res)
	return res, err
}

// StartShadow calls POST /v1/shadow.
func (c *Client) StartShadow(ctx context.Context, req wire.ShadowRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodPost, "/v1/shadow", req, &res)
	return res, err
}

// StopShadow calls DELETE /v1/shadow.
func (c *Client) StopShadow(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	var res wire.Change
	err := c.do(ctx, http.MethodDelete, "/v1/shadow", req, &res)
	return res, err
}

// Shadow calls GET /v1/shadow: the running shadow and its figures, nil
// when none runs.
func (c *Client) Shadow(ctx context.Context) (*wire.Shadow, error) {
	var res *wire.Shadow
	err := c.do(ctx, http.MethodGet, "/v1/shadow", nil, &res)
	return res, err
}
