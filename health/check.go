package health

import (
	"net/netip"

	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/vipswap/vipswap/proxy/proxyproto"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/vipswap/vipswap/internal/sockerr"
	"github.com/vipswap/vipswap/proxy/h1"
)

// Check codes, in HAProxy's words (its "check_status"): the layer a probe
// reached and how it ended.
const (
	// L7OK: the probe was answered with a 2xx or 3xx.
	L7OK = "L7OK"
	// L7STS: the probe was answered with another status.
	L7STS = "L7STS"
	// L7RSP: the instance answered something that is not a valid HTTP
	// response, or closed the connection without answering.
	L7RSP = "L7RSP"
	// L7TOUT: connected, but no answer within the timeout.
	L7TOUT = "L7TOUT"
	// L4CON: the connection was refused or failed.
	L4CON = "L4CON"
	// L4TOUT: the connection did not complete within the timeout.
	L4TOUT = "L4TOUT"
	// SOCKERR: vipswap could not probe at all (out of descriptors, memory
	// or ports). Says nothing about the instance: it neither passes nor
	// fails.
	SOCKERR = "SOCKERR"
	// PASSIVE: the data plane saw the instance refuse a connection.
	PASSIVE = "PASSIVE"
)

// Check is the outcome of one probe (or a passive mark).
type Check struct {
	// Code is one of the codes above.
	Code string `json:"code"`
	// Status is the HTTP status of an answered probe (L7OK, L7STS), else 0.
	Status int `json:"status,omitempty"`
	// Detail says more: the socket error, the status text.
	Detail string `json:"detail,omitempty"`
	// Time is when the probe started.
	Time time.Time `json:"time"`
	// Took is how long it took.
	Took time.Duration `json:"took_ns"`
}

// OK reports whether the check passed.
func (c Check) OK() bool { return c.Code == L7OK }

// String reads like HAProxy's: "L7STS 404", "L4CON connection refused".
func (c Check) String() string {
	switch {
	case c.Code == "":
		return "not checked yet"
	case c.Status != 0:
		return fmt.Sprintf("%s %d", c.Code, c.Status)
	case c.Detail != "":
		return c.Code + " " + c.Detail
	}
	return c.Code
}

// Try probes t once with cfg's path and timeout (not the settings in
// force), and says how it went: whether new settings would pass before
// they apply. cfg.Probe, when set, answers instead.
func (c *Checker) Try(ctx context.Context, cfg Config, t Target) Check {
	if cfg.Probe != nil {
		return cfg.Probe(ctx, t)
	}
	return c.check(ctx, cfg, t)
}

// replaceSlot replaces {slot} in path by slot, query-escaped.
func replaceSlot(path, slot string) string {
	return strings.ReplaceAll(path, "{slot}", url.QueryEscape(slot))
}

// probe checks target once: GET path on a new connection (over TLS when tr
// says so), within the timeout. A cleartext connection begins with a PROXY
// protocol header of version pp (1 or 2; 0: none) that names no client (v1
// UNKNOWN, v2 LOCAL), as the specification has health checks do.
func (c *Checker) probe(ctx context.Context, tr Transport, t Target, path string, timeout time.Duration, pp int) Check {
	start := time.Now()
	ck := Check{Time: start}
	done := func(code, detail string) Check {
		ck.Code, ck.Detail, ck.Took = code, detail, time.Since(start)
		return ck
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, code, detail := c.connect(ctx, t, timeout)
	if conn == nil {
		return done(code, detail)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	raw := conn
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if tr.TLS != nil {
		tc, err := dialTLS(ctx, conn, tr.TLS, t, "http/1.1")
		if err != nil {
			return done(tlsFailure(err, timeout))
		}
		defer tc.Close()
		conn = tc
	}
	var head []byte
	switch pp {
	case 1:
		head = proxyproto.AppendV1(head, netip.AddrPort{}, netip.AddrPort{})
	case 2:
		head = proxyproto.AppendV2(head, netip.AddrPort{}, netip.AddrPort{})
	}
	head = fmt.Appendf(head, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: vipswap-health\r\nConnection: close\r\n\r\n", path, t.Addr)
	if _, err := conn.Write(head); err != nil {
		if sockerr.Timeout(err) {
			return done(L7TOUT, fmt.Sprintf("no answer within %s", timeout))
		}
		return done(L4CON, socketError(err))
	}
	resp, err := h1.ReadResponse(bufio.NewReaderSize(conn, 4<<10), http.MethodGet, h1.ResponseLimits{MaxHeaderBytes: 16 << 10, MaxHeaderFields: 100})
	var invalid *h1.ResponseError
	switch {
	case err == nil:
	case sockerr.Timeout(err):
		return done(L7TOUT, fmt.Sprintf("no answer within %s", timeout))
	case errors.As(err, &invalid):
		return done(L7RSP, invalid.Msg)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return done(L7RSP, "closed without answering")
	default:
		return done(L7RSP, socketError(err))
	}
	ck.Status = resp.StatusCode
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return done(L7OK, http.StatusText(resp.StatusCode))
	}
	return done(L7STS, http.StatusText(resp.StatusCode))
}

// connect dials t within ctx; when it cannot, it returns the check's code
// and detail instead: SOCKERR (out of descriptors or ports here), L4TOUT
// (no connection within timeout) or L4CON (refused, unreachable).
func (c *Checker) connect(ctx context.Context, t Target, timeout time.Duration) (net.Conn, string, string) {
	conn, err := c.dial(ctx, "tcp", t.Addr)
	switch {
	case err == nil:
		return conn, "", ""
	case sockerr.LocalShortage(err):
		return nil, SOCKERR, socketError(err)
	case sockerr.Timeout(err) || errors.Is(err, context.DeadlineExceeded):
		return nil, L4TOUT, fmt.Sprintf("no connection within %s", timeout)
	}
	return nil, L4CON, socketError(err)
}

// socketError returns the innermost description of a socket error:
// "connection refused" rather than "dial tcp 127.0.0.1:1: connect:
// connection refused".
func socketError(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
