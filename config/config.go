// Package config is vipswap's static configuration: the YAML schema, its
// defaults and its validation. It describes listeners, the admin address, the
// store, health-check settings and slot membership. It never holds routing
// state (which slot is active): that lives in the store.
package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"
)

// Config is a whole vipswap configuration. Zero values mean the default that
// Default sets.
type Config struct {
	// Admin is the admin API.
	Admin Admin `yaml:"admin"`
	// State is where the routing state is kept.
	State Store `yaml:"state"`
	// Listeners are the addresses vipswap accepts traffic on.
	Listeners Listeners `yaml:"listeners"`
	// Health configures the active probes.
	Health Health `yaml:"health"`
	// Proxy tunes the data plane.
	Proxy Proxy `yaml:"proxy"`
	// Log configures vipswap's own log and the access log.
	Log Log `yaml:"log"`
	// Measure says which traffic a switch's measurement covers.
	Measure Measure `yaml:"measure"`
	// Analysis is what rollouts judge their canary by.
	Analysis Analysis `yaml:"analysis"`
	// Rollouts are named rollout plans (vipswap rollout start --plan NAME).
	Rollouts map[string]RolloutPlan `yaml:"rollouts"`
	// Shadow bounds the mirror of vipswap shadow (docs/shadow.md).
	Shadow Shadow `yaml:"shadow"`
	// Affinity keeps prod's clients on one slot.
	Affinity Affinity `yaml:"affinity"`
	// Routes send matching prod requests to a named slot, before weights.
	Routes []Route `yaml:"routes"`
	// HAProxy, when set, makes vipswap drive a running HAProxy through its
	// runtime API, beside its own listeners.
	HAProxy *HAProxy `yaml:"haproxy"`
	// AzureLB, AzureAppGW and AzureFrontDoor, when set, make vipswap
	// drive an Azure Load Balancer, Application Gateway or Front Door
	// (at most one of them), beside its own listeners (docs/azure.md).
	AzureLB        *AzureLB        `yaml:"azure_lb"`
	AzureAppGW     *AzureAppGW     `yaml:"azure_appgw"`
	AzureFrontDoor *AzureFrontDoor `yaml:"azure_frontdoor"`
	// Slots are the groups of instances, by name.
	Slots map[string]Slot `yaml:"slots"`
	// Active seeds the active slot when the store holds no state yet. Empty
	// means the first slot in the file.
	Active string `yaml:"active"`

	// SlotOrder lists the slot names in the order the file declares them.
	SlotOrder []string `yaml:"-"`

	file  string
	lines map[string]int // key path -> line, for validation messages
}

// Admin configures the admin API server.
type Admin struct {
	// Listen is the admin API address. Default 127.0.0.1:9090.
	Listen string `yaml:"listen"`
	// TokenFile names a file of bearer tokens (one per line: SECRET or
	// NAME SECRET). With tokens, every change needs one; when Listen is not
	// a loopback address a token file is mandatory and reads need a token
	// too. Empty means no tokens (loopback only). A relative path is
	// relative to the configuration file's directory.
	TokenFile string `yaml:"token_file"`
	// Hosts are host names, besides IP addresses and localhost, under which
	// the admin API may be reached (the Host header of its requests). Any
	// other name is refused, so that a DNS-rebinding web page cannot reach
	// the API from an operator's browser. Empty by default.
	Hosts []string `yaml:"hosts"`
	// AllowRun lets POST /v1/slots (vipswap slot add --run-file) add a
	// slot whose run: block vipswap starts, and a release (vipswap deploy,
	// rolling) run a command or gate command of its own: whoever may
	// change the state may then run any command as vipswap's user. Off by
	// default; slots with run: in this file are not affected.
	AllowRun bool `yaml:"allow_run"`
	// TLS, when set, makes the admin API speak HTTPS with these
	// certificates, as a listener's tls does; a reload re-reads them.
	TLS *ListenerTLS `yaml:"tls"`
}

// Store configures the embedded state store.
type Store struct {
	// Path is the bbolt file holding the state. Default vipswap.db. A
	// relative path is relative to the configuration file's directory.
	Path string `yaml:"path"`
	// History bounds the history kept with the state.
	History History `yaml:"history"`
	// Etcd, if set, keeps the state and history in etcd instead of Path,
	// so several vipswap nodes agree (docs/cluster.md). Setting path too
	// is an error.
	Etcd *Etcd `yaml:"etcd"`
}

// Etcd configures the etcd store of a cluster of vipswap nodes.
type Etcd struct {
	// Endpoints are etcd's client URLs (http://10.0.0.5:2379).
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix of this cluster's state. Default /vipswap/.
	Prefix string `yaml:"prefix"`
	// DialTimeout bounds connecting to etcd. Default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RequestTimeout bounds every read and write: a change fails after
	// it when etcd is out of reach. Default 2s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// TLS, when CA is set, reaches etcd over TLS; Cert and Key, when
	// set, are the client certificate.
	TLS EtcdTLS `yaml:"tls"`
	// Username, with the password in PasswordFile, authenticates to etcd.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// LocalCopy is the file this node keeps the last state it saw in, to
	// serve it when it starts while etcd is out of reach. Default
	// vipswap-state.json. A relative path is relative to the
	// configuration file's directory.
	LocalCopy string `yaml:"local_copy"`
}

// EtcdTLS holds the PEM files for reaching etcd over TLS.
type EtcdTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// LocalBase is the path local files are named after (the instance ledger):
// the state file, or with etcd the local copy of the state.
func (s Store) LocalBase() string {
	if s.Etcd != nil {
		return s.Etcd.LocalCopy
	}
	return s.Path
}

// History is the retention of the history of changes: the oldest entries
// beyond either bound are removed in the transaction that records a new one.
type History struct {
	// MaxEntries is how many entries are kept at most. Default 10000.
	MaxEntries int `yaml:"max_entries"`
	// MaxAge removes entries older than this; 0 keeps entries whatever
	// their age. Default 720h (30 days).
	MaxAge time.Duration `yaml:"max_age"`
}

// Listeners are the two front doors.
type Listeners struct {
	// Prod follows the active slot. Default 127.0.0.1:8080.
	Prod Listener `yaml:"prod"`
	// Stage follows the standby slot. Default 127.0.0.1:8081.
	Stage Listener `yaml:"stage"`
}

// Listener is one front door. The configuration gives it as an address
// ("127.0.0.1:8080") or as a mapping with the address and its TLS.
type Listener struct {
	// Addr is host:port.
	Addr string `yaml:"addr"`
	// TLS, when set, makes the listener speak HTTPS.
	TLS *ListenerTLS `yaml:"tls"`
	// ProxyProtocol is off (the default), accept or require: whether
	// connections start with a PROXY protocol header (version 1 or 2)
	// naming the client a load balancer relays. Accept takes one when it
	// comes; require closes connections without one. Only peers in
	// ProxyProtocolFrom may send one.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// ProxyProtocolFrom are the peers (addresses or CIDR prefixes) whose
	// PROXY header is believed. Default: loopback only. Whoever may send
	// a header chooses the client address vipswap sees.
	ProxyProtocolFrom []string `yaml:"proxy_protocol_from"`
	// RedirectTo, when set, names a TLS listener (prod or stage): this
	// listener then answers every request with a 308 to the same host
	// and path on that listener's https URL.
	RedirectTo string `yaml:"redirect_to"`
	// HTTP2 offers HTTP/2 ("h2") beside HTTP/1.1 by ALPN on a TLS
	// listener. Default true; a cleartext listener ignores it (see H2C).
	// Changing it takes a restart.
	HTTP2 bool `yaml:"http2"`
	// H2C serves cleartext HTTP/2 to clients that open with its preface
	// (prior knowledge, as gRPC clients inside a network do); others get
	// HTTP/1.1. Default false; refused on a TLS listener. Changing it
	// takes a restart.
	H2C bool `yaml:"h2c"`
}

// Short reports whether l is only an address (the short form).
func (l Listener) Short() bool {
	return l.TLS == nil && l.ProxyProtocol == "" && len(l.ProxyProtocolFrom) == 0 && l.RedirectTo == ""
}

// ProxyProtocolPeers returns the prefixes of ProxyProtocolFrom (a bare
// address is its own prefix), loopback when it is empty. It skips what
// Validate refuses.
func (l Listener) ProxyProtocolPeers() []netip.Prefix {
	if len(l.ProxyProtocolFrom) == 0 {
		return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	var out []netip.Prefix
	for _, s := range l.ProxyProtocolFrom {
		if p, err := parsePeer(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parsePeer parses an address or a CIDR prefix.
func parsePeer(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	return p.Masked(), nil
}

// String returns the listener's address, and says when it speaks TLS, or
// cleartext HTTP/2 beside HTTP/1.1.
func (l Listener) String() string {
	switch {
	case l.TLS != nil && l.TLS.ACME != nil:
		return l.Addr + " (TLS, ACME for " + strings.Join(l.TLS.ACME.Names, ", ") + ")"
	case l.TLS != nil:
		return l.Addr + " (TLS)"
	case l.H2C:
		return l.Addr + " (h2c)"
	}
	return l.Addr
}

// ListenerTLS is a listener's TLS.
type ListenerTLS struct {
	// Certs are the certificates it serves, each chosen by the name a
	// client asks for (SNI); the first is the default.
	Certs []CertFiles `yaml:"certs"`
	// ACME, when set, obtains and renews certificates for its names from
	// an ACME CA; they serve beside Certs, and win for their names.
	ACME *ACME `yaml:"acme"`
}

// LetsEncrypt is the ACME directory of Let's Encrypt's production CA, the
// default of acme.ca.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// ACME configures automatic certificates for a TLS listener.
type ACME struct {
	// Email is the ACME account's contact address.
	Email string `yaml:"email"`
	// CA is the ACME directory URL (https). Empty means LetsEncrypt.
	CA string `yaml:"ca"`
	// CARoot, when set, is a PEM file of the certificates that may sign
	// the CA directory's own HTTPS certificate, trusted besides the
	// system's (a private or test CA).
	CARoot string `yaml:"ca_root"`
	// Names are the DNS names to obtain certificates for, one each.
	Names []string `yaml:"names"`
}

// Directory returns the ACME directory URL in force.
func (a *ACME) Directory() string {
	if a.CA == "" {
		return LetsEncrypt
	}
	return a.CA
}

// CertFiles names a certificate chain and its private key, PEM files.
type CertFiles struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Health configures active health probes.
type Health struct {
	// Path is the probe's path and query; {slot} is replaced by the
	// instance's slot. Default /api/ping?slot={slot}.
	Path string `yaml:"path"`
	// Interval is the time between two probes of one instance. Default 1s.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one probe. Default 1s.
	Timeout time.Duration `yaml:"timeout"`
	// Rise is how many consecutive passes make an instance healthy. Default 2.
	Rise int `yaml:"rise"`
	// Fall is how many consecutive failures make it unhealthy. Default 2.
	Fall int `yaml:"fall"`
	// Type is http (a GET of Path, the default) or grpc (the
	// grpc.health.v1 Health/Check call with the slot's name as the
	// service, over the slot's protocol, which must then be h2c or h2).
	Type string `yaml:"type"`
}

// Health check types.
const (
	HealthHTTP = "http"
	HealthGRPC = "grpc"
)

// Proxy tunes the data plane.
type Proxy struct {
	// Attempts bounds how many instances one request may be sent to. Default 3.
	Attempts int `yaml:"attempts"`
	// Hold is how long a request waits for a healthy instance before it gets
	// a 503. Default 2s.
	Hold time.Duration `yaml:"hold"`
	// MaxHolding bounds how many requests may wait at once; more get a 503
	// at once. Default 10000.
	MaxHolding int `yaml:"max_holding"`
	// ReadHeaderTimeout bounds how long a client may take to send request
	// headers, from their first byte. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes client keep-alive connections idle this long,
	// and new connections silent this long. Default 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout bounds how long vipswap waits for in-flight requests
	// when it stops. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ClientReadTimeout bounds the wait for each next piece of a request
	// body; the client then gets a 408. Default 30s.
	ClientReadTimeout time.Duration `yaml:"client_read_timeout"`
	// ClientWriteTimeout bounds how long one write to a client may block.
	// Default 30s.
	ClientWriteTimeout time.Duration `yaml:"client_write_timeout"`
	// ConnectTimeout bounds connecting to an instance. Default 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// InstanceWriteTimeout bounds how long one write of a request to an
	// instance may block. Default 30s.
	InstanceWriteTimeout time.Duration `yaml:"instance_write_timeout"`
	// ResponseHeaderTimeout bounds the wait for an instance's response head
	// once the request was sent; the client then gets a 504. Default 60s.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// InstanceReadTimeout bounds the wait for each next piece of a response
	// body; the response is then cut off. Default 60s.
	InstanceReadTimeout time.Duration `yaml:"instance_read_timeout"`
	// MaxConnections bounds each listener's client connections; at the
	// limit a listener stops accepting until one closes. Zero (the
	// default) means one fifth of the descriptors vipswap may open, less a
	// reserve (see docs/configuration.md).
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerClient bounds the connections in use (all but
	// those idle between two requests) one client (an IPv4 address, an
	// IPv6 /64) may hold on a listener; one more is closed at once. Whatever its value, a client gets at most half of
	// max_connections. Zero turns the cap off, for clients behind a front
	// that hides their addresses. Default 256. A reload applies it to the
	// next connections.
	MaxConnectionsPerClient int `yaml:"max_connections_per_client"`
	// MaxHeaderBytes bounds a request head and an instance's response
	// head. Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// RequestBufferBytes is the largest request body (by Content-Length)
	// read whole before an instance is picked, within ClientReadTimeout
	// in all; larger and chunked bodies stream. 0 turns buffering off.
	// Default 65536.
	RequestBufferBytes int `yaml:"request_buffer_bytes"`
	// MaxHeaderFields bounds the header fields of a request head and of an
	// instance's response head. Default 100.
	MaxHeaderFields int `yaml:"max_header_fields"`
	// HTTP2 bounds HTTP/2 client connections. A reload applies it to the
	// next connections.
	HTTP2 ProxyHTTP2 `yaml:"http2"`
}

// ProxyHTTP2 bounds each HTTP/2 client connection. Its header list is
// bounded by max_header_bytes, its idle time by idle_timeout, its writes
// by client_write_timeout and its request bodies by client_read_timeout,
// as an HTTP/1.1 connection's.
type ProxyHTTP2 struct {
	// MaxConcurrentStreams bounds the streams (requests) a connection may
	// have open at once; more are refused. Default 100.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// StreamWindow is each stream's flow-control window: how much of a
	// request body a client may send ahead of vipswap. Default 262144.
	StreamWindow int `yaml:"stream_window"`
	// ConnectionWindow is the window of a connection's streams together.
	// Default 1048576.
	ConnectionWindow int `yaml:"connection_window"`
	// ReadIdleTimeout is how long a connection may be silent before
	// vipswap pings it. Default 60s.
	ReadIdleTimeout time.Duration `yaml:"read_idle_timeout"`
	// PingTimeout is how long the answer to that ping may take before the
	// connection is closed. Default 15s.
	PingTimeout time.Duration `yaml:"ping_timeout"`
}

// Slot is one named group of instances: either fixed addresses or processes
// vipswap runs itself, never both.
type Slot struct {
	// Instances are the host:port addresses of the slot's instances.
	Instances []string `yaml:"instances"`
	// Run, when set, makes vipswap start the slot's instances itself.
	Run *Run `yaml:"run"`
	// Version labels what the slot runs ("2.1"), for status and the
	// dashboard. Optional; a reload may change it.
	Version string `yaml:"version"`
	// ProxyProtocol is off (the default), v1 or v2: the PROXY protocol
	// header vipswap writes at the start of each connection to the
	// slot's instances, naming the client. Each request then takes a new
	// connection (a pooled one would name an earlier client). A reload
	// may change it.
	ProxyProtocol string `yaml:"proxy_protocol"`
	// Protocol is how vipswap speaks to the slot's instances: http1
	// (HTTP/1.1, the default), h2c (HTTP/2 over cleartext, with prior
	// knowledge) or h2 (HTTP/2 over TLS). A reload may change it.
	Protocol string `yaml:"protocol"`
	// TLS, when set, makes vipswap reach the instances over TLS (HTTPS/1.1
	// with protocol http1; protocol h2 always uses TLS, verified against
	// the system's roots when TLS is absent). Its files are re-read by a
	// reload.
	TLS *SlotTLS `yaml:"tls"`
}

// ProxyProtocolVersion returns 1 or 2 for ProxyProtocol v1 or v2, else 0.
func (s Slot) ProxyProtocolVersion() int {
	switch s.ProxyProtocol {
	case "v1":
		return 1
	case "v2":
		return 2
	}
	return 0
}

// Slot protocols.
const (
	ProtocolHTTP1 = "http1"
	ProtocolH2C   = "h2c"
	ProtocolH2    = "h2"
)

// SlotTLS is how vipswap reaches a slot's instances over TLS.
type SlotTLS struct {
	// CA is a PEM bundle of the certificate authorities the instances'
	// certificates must chain to. Empty means the system's roots.
	CA string `yaml:"ca"`
	// ServerName is the name the instances' certificates must carry, sent
	// as SNI. Empty means the host of each instance's address.
	ServerName string `yaml:"server_name"`
	// Cert and Key, when set, are the client certificate vipswap presents
	// (mutual TLS): both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Run describes instances vipswap starts as child processes.
type Run struct {
	// Command is the program and its arguments. {port} is replaced by a free
	// port anywhere in any argument, and the child's environment has it as
	// PORT; a bare "vipswap" as the program means the running binary.
	Command []string `yaml:"command"`
	// Address is where an instance listens, the address vipswap probes and
	// forwards to; {port} is replaced by its port. Default 127.0.0.1:{port}.
	Address string `yaml:"address"`
	// Replicas is how many processes to run. Default 1.
	Replicas int `yaml:"replicas"`
	// StopTimeout is how long a process gets after SIGTERM before SIGKILL.
	// Default 10s.
	StopTimeout time.Duration `yaml:"stop_timeout"`
}

// Measure says which traffic the measurement of a switch (swap, rollback)
// covers: from Before the change until After it, or until the old slot has
// drained if that takes longer, but no longer than Limit.
type Measure struct {
	// Before is how much traffic before the change counts. Default 5s.
	Before time.Duration `yaml:"before"`
	// After is how much traffic after the change counts at least. Default
	// 5s.
	After time.Duration `yaml:"after"`
	// Limit bounds the wait for the old slot to drain. Default 5m.
	Limit time.Duration `yaml:"limit"`
}

// Analysis says when a rollout's canary fails: over a sliding Window of
// its prod traffic, errors (5xx and failed answers) or p99 latency beyond an
// absolute bound or beyond the stable slot's by a factor. Zero bounds are
// off.
type Analysis struct {
	// Window is how much recent traffic is judged. Default 10s.
	Window time.Duration `yaml:"window"`
	// MinRequests is how many canary requests a verdict needs; a step whose
	// window has fewer waits. Default 100.
	MinRequests int `yaml:"min_requests"`
	// MaxErrorRate is the highest error fraction allowed. Default 0.01.
	MaxErrorRate float64 `yaml:"max_error_rate"`
	// MaxP99 is the highest p99 latency allowed. Default none.
	MaxP99 time.Duration `yaml:"max_p99"`
	// MaxErrorRateRatio bounds the canary's error rate relative to the
	// stable slot's. Default none.
	MaxErrorRateRatio float64 `yaml:"max_error_rate_ratio"`
	// MaxP99Ratio bounds the canary's p99 relative to the stable slot's.
	// Default none.
	MaxP99Ratio float64 `yaml:"max_p99_ratio"`
	// Paths are path prefixes (at most 8) whose requests are judged on
	// their own as well, each against MaxErrorRate: a path that fails on
	// the canary aborts the rollout even when it is too small a part of
	// the traffic to move the overall rate. Default none.
	Paths []string `yaml:"paths"`
}

// Shadow bounds the mirror that copies prod's requests to a slot under
// test (vipswap shadow), and sets what every comparison ignores. The
// shadow itself (its slot, share, methods) is started through the admin
// API and kept in the state.
type Shadow struct {
	// QueueSize bounds the copies waiting for a connection; more are
	// dropped and counted. Default 1024.
	QueueSize int `yaml:"queue_size"`
	// MaxConns bounds the connections to the target's instances, all
	// together. Default 32.
	MaxConns int `yaml:"max_conns"`
	// BodyLimit is the largest request body copied (at most
	// proxy.request_buffer: a body prod streams is never copied). Default
	// 64 KiB.
	BodyLimit int `yaml:"body_limit"`
	// CompareLimit is the longest answer body compared (by hash); longer
	// ones are compared by status and type. Default 1 MiB.
	CompareLimit int `yaml:"compare_limit"`
	// KeepLimit is the longest answer body kept whole to compare as JSON
	// and to find where it differs. Default 64 KiB.
	KeepLimit int `yaml:"keep_limit"`
	// MaxMemory bounds what copies not yet compared hold. Default 32 MiB.
	MaxMemory int `yaml:"max_memory"`
	// Timeout bounds one copy's exchange with the target. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// IgnoreFields are JSON fields every comparison leaves out: a name at
	// any depth, or "$.a.b" from the root. Default none.
	IgnoreFields []string `yaml:"ignore_fields"`
	// IgnoreHeaders are response headers every comparison leaves out,
	// besides Date, Server and the connection's. Default none.
	IgnoreHeaders []string `yaml:"ignore_headers"`
	// StopErrorRate is the target's error rate over the last 10s at which
	// the shadow stops by itself. Default 0.5; above 1 never.
	StopErrorRate float64 `yaml:"stop_error_rate"`
	// StopMinRequests is how many copies those 10s must hold first.
	// Default 50.
	StopMinRequests int `yaml:"stop_min_requests"`
	// BusyWait is how long vipswap's goroutines may wait for a CPU (the
	// 99th percentile over 50 ms) before copies are dropped as busy, so
	// that copies only use the CPU prod leaves. Default 1ms; 0s never
	// drops for it.
	BusyWait time.Duration `yaml:"busy_wait"`
}

// Affinity keeps a prod client on one slot while that slot takes traffic.
type Affinity struct {
	// Cookie names the cookie that carries the client's slot. Empty (the
	// default) turns affinity off.
	Cookie string `yaml:"cookie"`
	// MaxAge is the cookie's lifetime. Zero (the default) makes it a
	// session cookie.
	MaxAge time.Duration `yaml:"max_age"`
	// KeyFile, if set, names a file whose contents (at least 16 bytes,
	// surrounding white space ignored) sign the affinity cookies. By
	// default vipswap keeps a random key in its state, which every node
	// sharing the state (a cluster) uses; give independent vipswaps the
	// same key file for their cookies to hold on each other. Re-read on
	// reload; changing it sends every client to a slot by weight once.
	KeyFile string `yaml:"key_file"`
	// PinHeader, if set, lets a prod request name its slot in that header
	// (for testers). Off by default: it lets anyone who reaches prod choose
	// a slot.
	PinHeader string `yaml:"pin_header"`
}

// Route sends the prod requests whose path is PathPrefix or below it (and
// that carry Header with Value, when Header is set) to Slot, whatever the
// weights. The longest prefix wins.
type Route struct {
	// PathPrefix is matched against the request's canonical, decoded path
	// on segment boundaries: /api and /api/ both match /api, /api/ and
	// /api/x, not /apix. It must be canonical itself (no // and no dot
	// segments) and written decoded.
	PathPrefix string `yaml:"path_prefix"`
	// Header and Value, if set, must also match.
	Header string `yaml:"header"`
	Value  string `yaml:"value"`
	// Slot is where matching requests go.
	Slot string `yaml:"slot"`
}

// RolloutPlan is a named rollout plan.
type RolloutPlan struct {
	// Steps are the canary's weights in percent, rising, ending at 100.
	Steps []float64 `yaml:"steps"`
	// Interval is how long each step lasts. Default 1m.
	Interval time.Duration `yaml:"interval"`
	// Pause waits for vipswap promote after each step but the last.
	Pause bool `yaml:"pause"`
	// Gates must pass before each step.
	Gates []Gate `yaml:"gates"`
	// Shadow, if set, is a gate that a deploy following this plan (vipswap
	// deploy --strategy rollout --plan NAME) runs before the first step:
	// prod's requests copied to the new slot and the answers compared
	// (docs/shadow.md). Default none.
	Shadow *ShadowGate `yaml:"shadow"`
}

// ShadowGate is a shadow run as a gate, and the bounds its figures must
// keep. Zero values mean the defaults of docs/shadow.md.
type ShadowGate struct {
	// Duration is how long prod's requests are copied (required).
	Duration time.Duration `yaml:"duration"`
	// Percent is the share of prod's requests copied. Default 100.
	Percent float64 `yaml:"percent"`
	// Methods are the methods copied. Default GET and HEAD.
	Methods []string `yaml:"methods"`
	// MinRequests is how many compared copies a pass needs. Default 100.
	MinRequests int `yaml:"min_requests"`
	// MaxDifferRate is the highest share of differing answers. Default 0.
	MaxDifferRate float64 `yaml:"max_differ_rate"`
	// MaxErrorRate is the highest share of copies the new slot may fail
	// (0 allows none). Default (absent) 0.01.
	MaxErrorRate *float64 `yaml:"max_error_rate"`
	// MaxP99Ratio bounds the new slot's p99 over prod's. Default none.
	MaxP99Ratio float64 `yaml:"max_p99_ratio"`
	// IgnoreFields and IgnoreHeaders are left out of the comparison,
	// besides shadow.ignore_fields and shadow.ignore_headers.
	IgnoreFields  []string `yaml:"ignore_fields"`
	IgnoreHeaders []string `yaml:"ignore_headers"`
}

// Gate is a check before a rollout step: an HTTP GET that must answer 2xx,
// or a command that must exit 0.
type Gate struct {
	// HTTP is the URL to GET.
	HTTP string `yaml:"http"`
	// Command is the program and its arguments.
	Command []string `yaml:"command"`
	// Timeout bounds the check. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
}

// Log configures logging. vipswap logs to standard error.
type Log struct {
	// Format is "text" (key=value) or "json". Default text.
	Format string `yaml:"format"`
	// Level is the lowest level logged: debug, info, warn or error.
	// Default info.
	Level string `yaml:"level"`
	// Access logs every proxied request (or a sample) at info level. Off by
	// default.
	Access bool `yaml:"access"`
	// AccessSample is the fraction of requests the access log keeps, above
	// 0 and at most 1. Default 1 (all).
	AccessSample float64 `yaml:"access_sample"`
}

// Default returns a configuration with every default set and no slots.
func Default() *Config {
	return &Config{
		Admin:     Admin{Listen: "127.0.0.1:9090"},
		State:     Store{Path: "vipswap.db", History: History{MaxEntries: 10000, MaxAge: 720 * time.Hour}},
		Listeners: Listeners{Prod: Listener{Addr: "127.0.0.1:8080", HTTP2: true}, Stage: Listener{Addr: "127.0.0.1:8081", HTTP2: true}},
		Log:       Log{Format: "text", Level: "info", AccessSample: 1},
		Measure:   Measure{Before: 5 * time.Second, After: 5 * time.Second, Limit: 5 * time.Minute},
		Analysis:  Analysis{Window: 10 * time.Second, MinRequests: 100, MaxErrorRate: 0.01},
		Shadow: Shadow{QueueSize: 1024, MaxConns: 32, BodyLimit: 64 << 10, CompareLimit: 1 << 20, KeepLimit: 64 << 10,
			MaxMemory: 32 << 20, Timeout: 5 * time.Second, StopErrorRate: 0.5, StopMinRequests: 50, BusyWait: time.Millisecond},
		Health: Health{
			Path:     "/api/ping?slot={slot}",
			Interval: time.Second,
			Timeout:  time.Second,
			Rise:     2,
			Fall:     2,
			Type:     HealthHTTP,
		},
		Proxy: Proxy{
			Attempts:          3,
			Hold:              2 * time.Second,
			MaxHolding:        10000,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ShutdownTimeout:   30 * time.Second,

			ClientReadTimeout:     30 * time.Second,
			ClientWriteTimeout:    30 * time.Second,
			ConnectTimeout:        5 * time.Second,
			InstanceWriteTimeout:  30 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			InstanceReadTimeout:   60 * time.Second,
			MaxHeaderBytes:        64 << 10,
			MaxHeaderFields:       100,
			RequestBufferBytes:    64 << 10,

			MaxConnectionsPerClient: 256,
			HTTP2: ProxyHTTP2{
				MaxConcurrentStreams: 100,
				StreamWindow:         256 << 10,
				ConnectionWindow:     1 << 20,
				ReadIdleTimeout:      60 * time.Second,
				PingTimeout:          15 * time.Second,
			},
		},
	}
}

// AdminIsLoopback reports whether the admin API listens on loopback only.
func (c *Config) AdminIsLoopback() bool { return isLoopback(c.Admin.Listen) }

// SlogLevel returns Level as a slog.Level.
func (l Log) SlogLevel() (slog.Level, error) {
	switch l.Level {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("want debug, info, warn or error, got %q", l.Level)
}

// HAProxy is a running HAProxy vipswap drives (see docs/haproxy.md).
type HAProxy struct {
	// Socket is its runtime API: the path of a unix "stats socket ...
	// level admin", or host:port of a TCP one on loopback. A relative path
	// is relative to the configuration file's directory.
	Socket string `yaml:"socket"`
	// Maps are the map files the prod and stage frontends choose their
	// backend with, as haproxy.cfg names them.
	Maps HAProxyMaps `yaml:"maps"`
	// Backends maps a slot to its backend; default "be_" + the slot's
	// name.
	Backends map[string]string `yaml:"backends"`
	// Health is "vipswap" (its own probes, the default) or "haproxy"
	// (HAProxy's check results) for the health that refuses a swap to an
	// unhealthy slot.
	Health string `yaml:"health"`
	// Timeout bounds one runtime API command. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Interval is how often vipswap reads HAProxy back (statistics, and
	// whether what it applied is still there). Default 500ms.
	Interval time.Duration `yaml:"interval"`
}

// HAProxyMaps names the map file of each listener's frontend.
type HAProxyMaps struct {
	Prod  string `yaml:"prod"`
	Stage string `yaml:"stage"`
}
