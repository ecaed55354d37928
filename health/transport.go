//lint:file-ignore SA1019 x/net/http2's ClientConn is one connection's RoundTrip without the Transport's own retries, which vipswap decides itself (docs/dependencies.md)

package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/net/http2"

	"github.com/vipswap/vipswap/internal/sockerr"
)

// Probe types (Config.Type).
const (
	// TypeHTTP probes with a GET of Config.Path (the default).
	TypeHTTP = "http"
	// TypeGRPC probes with grpc.health.v1.Health/Check, the slot's name as
	// the service.
	TypeGRPC = "grpc"
)

// Check codes of TLS, in HAProxy's words.
const (
	// L6RSP: the TLS handshake failed (the instance's certificate was not
	// trusted, or it refused vipswap's).
	L6RSP = "L6RSP"
	// L6TOUT: the TLS handshake did not complete within the timeout.
	L6TOUT = "L6TOUT"
)

// Transport is how probes reach one slot's instances: as the data plane
// does.
type Transport struct {
	// Protocol is "http1" (or empty), "h2c" or "h2".
	Protocol string
	// TLS, when set, is the TLS to the instances (verification, client
	// certificate). Its ServerName, when empty, becomes the instance's host.
	TLS *tls.Config
}

func (tr Transport) h2() bool { return tr.Protocol == "h2c" || tr.Protocol == "h2" }

// check probes t once as cfg says.
func (c *Checker) check(ctx context.Context, cfg Config, t Target) Check {
	tr := cfg.Transports[t.Slot]
	if cfg.Type == TypeGRPC || tr.h2() {
		return c.probeH2(ctx, cfg, tr, t)
	}
	path := probePath(cfg, t)
	return c.probe(ctx, tr, t, path, cfg.Timeout, cfg.ProxyProtocol[t.Slot])
}

// dialTLS starts TLS on conn within ctx, for t.
func dialTLS(ctx context.Context, conn net.Conn, conf *tls.Config, t Target, alpn string) (*tls.Conn, error) {
	conf = conf.Clone()
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(t.Addr)
		if err != nil {
			host = t.Addr
		}
		conf.ServerName = host
	}
	conf.NextProtos = []string{alpn}
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	if tc.ConnectionState().NegotiatedProtocol != alpn && alpn == "h2" {
		return nil, fmt.Errorf("the instance did not agree to HTTP/2 (ALPN h2)")
	}
	return tc, nil
}

// tlsFailure is the check of a failed handshake.
func tlsFailure(err error, timeout time.Duration) (string, string) {
	if sockerr.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return L6TOUT, fmt.Sprintf("no TLS handshake within %s", timeout)
	}
	return L6RSP, err.Error()
}

// probeH2 checks t over HTTP/2 (h2c, or h2 over TLS): a GET of the path,
// or with Type grpc the gRPC health check of the slot's service, on a new
// connection, within the timeout.
func (c *Checker) probeH2(ctx context.Context, cfg Config, tr Transport, t Target) Check {
	start := time.Now()
	ck := Check{Time: start}
	done := func(code, detail string) Check {
		ck.Code, ck.Detail, ck.Took = code, detail, time.Since(start)
		return ck
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, code, detail := c.connect(ctx, t, cfg.Timeout)
	if conn == nil {
		return done(code, detail)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	raw := conn // the variable conn becomes the TLS connection below
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	scheme := "http"
	if tr.TLS == nil && tr.Protocol == "h2" {
		tr.TLS = &tls.Config{} // h2 is TLS: the system's roots verify
	}
	if tr.TLS != nil {
		tc, err := dialTLS(ctx, conn, tr.TLS, t, "h2")
		if err != nil {
			return done(tlsFailure(err, cfg.Timeout))
		}
		conn, scheme = tc, "https"
		defer tc.Close()
	}
	h2t := &http2.Transport{AllowHTTP: true, DisableCompression: true, MaxHeaderListSize: 16 << 10}
	cc, err := h2t.NewClientConn(conn)
	if err != nil {
		return done(L7RSP, err.Error())
	}
	defer cc.Close()
	u := &url.URL{Scheme: scheme, Host: t.Addr}
	var req *http.Request
	if cfg.Type == TypeGRPC {
		u.Path = "/grpc.health.v1.Health/Check"
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(grpcHealthRequest(t.Slot)))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Grpc-Timeout", strconv.FormatInt(max(cfg.Timeout.Milliseconds(), 1), 10)+"m")
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		req.URL.Opaque = probePath(cfg, t) // the path and query as they are
	}
	if req == nil {
		return done(L7RSP, "invalid probe request")
	}
	req.Header.Set("User-Agent", "vipswap-health")
	resp, err := cc.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil || sockerr.Timeout(err) {
			return done(L7TOUT, fmt.Sprintf("no answer within %s", cfg.Timeout))
		}
		return done(L7RSP, err.Error())
	}
	defer resp.Body.Close()
	if cfg.Type != TypeGRPC {
		ck.Status = resp.StatusCode
		if resp.StatusCode >= 200 && resp.StatusCode < 400 {
			return done(L7OK, http.StatusText(resp.StatusCode))
		}
		return done(L7STS, http.StatusText(resp.StatusCode))
	}
	if resp.StatusCode != http.StatusOK {
		ck.Status = resp.StatusCode
		return done(L7STS, "not a gRPC answer: "+http.StatusText(resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		if ctx.Err() != nil || sockerr.Timeout(err) {
			return done(L7TOUT, fmt.Sprintf("no answer within %s", cfg.Timeout))
		}
		return done(L7RSP, err.Error())
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status") // trailers-only
	}
	switch status {
	case "0":
	case "":
		return done(L7RSP, "no grpc-status")
	case "5":
		return done(L7STS, fmt.Sprintf("NOT_FOUND: the instance does not serve slot %q", t.Slot))
	case "12":
		return done(L7STS, "UNIMPLEMENTED: the instance has no grpc.health.v1 service")
	default:
		msg := resp.Trailer.Get("Grpc-Message")
		if msg == "" {
			msg = resp.Header.Get("Grpc-Message")
		}
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return done(L7STS, fmt.Sprintf("grpc-status %s %s", status, msg))
	}
	serving, err := grpcHealthStatus(body)
	switch {
	case err != nil:
		return done(L7RSP, err.Error())
	case serving != 1:
		return done(L7STS, healthStatusName(serving))
	}
	return done(L7OK, "SERVING")
}

// probePath is cfg's path for t.
func probePath(cfg Config, t Target) string {
	return replaceSlot(cfg.Path, t.Slot)
}

// grpcHealthRequest is a gRPC message (uncompressed) carrying
// grpc.health.v1.HealthCheckRequest{service: service}, encoded by hand:
// field 1, a string.
func grpcHealthRequest(service string) []byte {
	msg := []byte{0x0a}
	msg = binary.AppendUvarint(msg, uint64(len(service)))
	msg = append(msg, service...)
	out := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

// grpcHealthStatus reads a gRPC message carrying
// grpc.health.v1.HealthCheckResponse and returns its status (field 1, an
// enum: 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN; absent is 0, UNKNOWN).
func grpcHealthStatus(b []byte) (uint64, error) {
	if len(b) < 5 {
		return 0, errors.New("no gRPC message in the answer")
	}
	if b[0] != 0 {
		return 0, errors.New("a compressed gRPC message (vipswap asks for none)")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	msg := b[5:]
	if uint64(n) != uint64(len(msg)) {
		return 0, errors.New("a truncated gRPC message")
	}
	var status uint64
	for len(msg) > 0 {
		key, k := binary.Uvarint(msg)
		if k <= 0 {
			return 0, errors.New("an invalid HealthCheckResponse")
		}
		msg = msg[k:]
		switch key & 7 {
		case 0: // varint
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("an invalid HealthCheckResponse")
			}
			msg = msg[k:]
			if key>>3 == 1 {
				status = v
			}
		case 2: // length-delimited: skipped
			l, k := binary.Uvarint(msg)
			if k <= 0 || l > uint64(len(msg)-k) {
				return 0, errors.New("an invalid HealthCheckResponse")
			}
			msg = msg[k+int(l):]
		default:
			return 0, errors.New("an invalid HealthCheckResponse")
		}
	}
	return status, nil
}

func healthStatusName(s uint64) string {
	switch s {
	case 0:
		return "UNKNOWN"
	case 2:
		return "NOT_SERVING"
	case 3:
		return "SERVICE_UNKNOWN"
	}
	return fmt.Sprintf("status %d", s)
}
