// Package client is the Go client of vipswap's admin API. The vipswap CLI uses
// it, and so can deployment pipelines:
//
//	c := client.New("http://127.0.0.1:9090")
//	res, err := c.Swap(ctx, api.SwapRequest{})
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/vipswap/vipswap/api"
)

// Client calls one vipswap admin API. It is safe for concurrent use.
type Client struct {
	base string
	http *http.Client
}

// Option tunes a Client.
type Option func(*Client)

// WithHTTPClient replaces the HTTP client (default: 30s timeout, no proxy).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

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
}

func (e *Error) Error() string { return e.Message }

// IsRefused reports whether err is the API refusing an operation because of
// the current state (HTTP 409), as opposed to a failure.
func IsRefused(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusConflict
}

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Swap calls POST /v1/swap.
func (c *Client) Swap(ctx context.Context, req api.SwapRequest) (api.SwapResult, error) {
	var res api.SwapResult
	err := c.do(ctx, http.MethodPost, "/v1/swap", req, &res)
	return res, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("admin API %s: %w", c.base, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the admin API at %s: %w", c.base, unwrapURL(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API %s: read answer: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		var eb api.ErrorBody
		if json.Unmarshal(raw, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("admin API answered %s", resp.Status)
		}
		return &Error{StatusCode: resp.StatusCode, Message: eb.Error}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("admin API %s: unreadable answer: %w", c.base, err)
	}
	return nil
}

// unwrapURL drops the *url.Error wrapper, whose message repeats the URL.
func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
