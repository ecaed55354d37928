//lint:file-ignore SA1019 x/net/http2's ClientConn is one connection's RoundTrip without the Transport's own retries, which vipswap decides itself (docs/dependencies.md)

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"time"

	"golang.org/x/net/http2"
)

// Protocol is how vipswap speaks to a slot's instances.
type Protocol string

// The protocols towards instances.
const (
	// HTTP1 is HTTP/1.1, over TLS when the Upstream has a TLS config.
	HTTP1 Protocol = "http1"
	// H2C is HTTP/2 over cleartext, with prior knowledge.
	H2C Protocol = "h2c"
	// H2 is HTTP/2 over TLS, negotiated by ALPN.
	H2 Protocol = "h2"
)

// Upstream is how the proxy reaches one slot's instances (Options.Upstreams).
type Upstream struct {
	// Protocol is the protocol; empty means HTTP1.
	Protocol Protocol
	// TLS, when set, verifies the instances and presents a client
	// certificate, if it has one. Its ServerName, when empty, becomes
	// each instance's host; NextProtos is set by the proxy. H2 without
	// it verifies instances against the system's roots.
	TLS *tls.Config
	// Fingerprint identifies TLS's settings and files: connections made
	// under one Upstream serve another with the same protocol and
	// fingerprint, so a reload that changes nothing keeps them.
	Fingerprint string
}

// key identifies how an Upstream reaches instances: "" for HTTP/1.1 in
// cleartext.
func (u *Upstream) key() string {
	if u == nil || (u.Protocol == "" || u.Protocol == HTTP1) && u.TLS == nil {
		return ""
	}
	return string(u.Protocol) + "/" + u.Fingerprint
}

// h2 reports whether u speaks HTTP/2.
func (u *Upstream) h2() bool { return u != nil && (u.Protocol == H2C || u.Protocol == H2) }

// upstream returns how the request's attempt on a slot's instance reaches
// it: nil is HTTP/1.1 in cleartext.
func (o *Options) upstream(slot string) *Upstream {
	u := o.Upstreams[slot]
	if u.key() == "" {
		return nil
	}
	return u
}

// init prepares pl for its Upstream: the TLS config with the server name
// and ALPN, and for HTTP/2 the transport its connections are made by.
func (pl *pool) init(o *Options) {
	up := pl.up
	if conf := up.TLS; conf != nil || up.Protocol == H2 {
		if conf == nil {
			conf = &tls.Config{} // h2 is TLS: the system's roots verify
		}
		c := conf.Clone()
		if c.ServerName == "" {
			host, _, err := net.SplitHostPort(pl.addr)
			if err != nil {
				host = pl.addr
			}
			c.ServerName = host
		}
		if up.h2() {
			c.NextProtos = []string{"h2"}
		} else {
			c.NextProtos = []string{"http/1.1"}
		}
		if c.ClientSessionCache == nil {
			c.ClientSessionCache = tls.NewLRUClientSessionCache(64)
		}
		pl.tls = c
	}
	if up.h2() {
		pl.h2t = &http2.Transport{
			AllowHTTP:          true,
			DisableCompression: true, // pass bodies as they are
			MaxHeaderListSize:  uint32(o.MaxHeaderBytes),
			IdleConnTimeout:    idleTimeout,
			ReadIdleTimeout:    30 * time.Second, // then a PING
			PingTimeout:        15 * time.Second,
			WriteByteTimeout:   o.InstanceWriteTimeout,
		}
	}
}

// dial connects to pl's instance within timeout, the TLS handshake
// included. Without TCP keep-alive probes: what waits on an instance has
// a timeout (a request's, a pooled connection's idle one, HTTP/2's pings),
// but for a tunnel, which turns them on (probeInstance); a connection per
// request with a body would otherwise pay four system calls for them.
func (pl *pool) dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: -1}
	if pl.tls == nil {
		return d.DialContext(ctx, "tcp", pl.addr)
	}
	td := &tls.Dialer{NetDialer: d, Config: pl.tls}
	c, err := td.DialContext(ctx, "tcp", pl.addr)
	if err != nil {
		return nil, &handshakeError{err: err}
	}
	return c, nil
}

// handshakeError is a failed TLS connection (the TCP connection, or the
// handshake on it): the instance never saw a request.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "TLS: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// tlsBuffered reports whether a TLS connection holds input already read
// from the socket: a record the instance sent beyond its answer, which
// alive's look at the socket cannot see. The read has a deadline in the
// past: it returns buffered data at once, or times out without touching
// the connection's state.
func (c *upstreamConn) tlsBuffered(tc *tls.Conn) bool {
	tc.SetReadDeadline(longAgo)
	var b [1]byte
	n, err := tc.Read(b[:])
	c.readDeadline = 0 // the next deadline is set anew
	tc.SetReadDeadline(time.Time{})
	var ne net.Error
	return n > 0 || !(errors.As(err, &ne) && ne.Timeout())
}

// tlsRefused reports whether err is a TLS alert from the instance (crypto/tls
// reports them as a "remote error") that refuses the handshake: on a
// connection's first exchange, the instance read nothing. With TLS 1.3 it
// comes after vipswap sent the request, when the instance has judged
// vipswap's certificate: only an alert of that judgement (or a failed
// handshake) says so. Any other (internal_error, say) may come from an
// instance that read the request and acted on it.
func tlsRefused(err error) bool {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" {
		return false
	}
	// crypto/tls's alert type is unexported: its value is the alert's code.
	v := reflect.ValueOf(oe.Err)
	if v.Kind() != reflect.Uint8 {
		return false
	}
	switch v.Uint() {
	case 40, // handshake_failure
		42, 43, 44, 45, 46, // bad, unsupported, revoked, expired, unknown certificate
		48,  // unknown_ca
		49,  // access_denied
		51,  // decrypt_error (the certificate's signature)
		116: // certificate_required
		return true
	}
	return false
}
