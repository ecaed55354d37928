package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vipswap/vipswap/route"
)

var slotName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// cookieName and headerName are the names affinity and routes accept: HTTP
// tokens, narrowed to what operators use.
var (
	cookieName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	headerName = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

// hostName is a DNS name as a Host header carries it, without port.
var hostName = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*$`)

// DefaultRunAddress is where a run: instance listens unless run.address
// says otherwise.
const DefaultRunAddress = "127.0.0.1:{port}"

func (c *Config) applyDefaults() {
	if c.Active == "" && len(c.SlotOrder) > 0 {
		c.Active = c.SlotOrder[0]
	}
	for name, s := range c.Slots {
		if s.Run != nil {
			s.Run.applyDefaults()
		}
		if s.Protocol == "" {
			s.Protocol = ProtocolHTTP1
		}
		c.Slots[name] = s
	}
}

func (r *Run) applyDefaults() {
	if r.Replicas == 0 {
		r.Replicas = 1
	}
	if r.StopTimeout == 0 {
		r.StopTimeout = 10 * time.Second
	}
	if r.Address == "" {
		r.Address = DefaultRunAddress
	}
}

// Validate reports every problem in c, one *Error per problem, joined.
func (c *Config) Validate() error {
	v := &validator{c: c, addrs: make(map[string]string)}
	v.addr("admin.listen", c.Admin.Listen)
	if c.Admin.TokenFile == "" && !isLoopback(c.Admin.Listen) {
		v.fail("admin.token_file", fmt.Sprintf("required when admin.listen is not a loopback address (it is %s)", c.Admin.Listen))
	}
	for i, h := range c.Admin.Hosts {
		if !hostName.MatchString(h) {
			v.fail(fmt.Sprintf("admin.hosts[%d]", i), fmt.Sprintf("want a host name without port or wildcard (such as vipswap.example.com), got %q", h))
		}
	}
	v.tls("admin", c.Admin.TLS)
	v.listener("listeners.prod", c.Listeners.Prod)
	v.listener("listeners.stage", c.Listeners.Stage)
	if c.State.Path == "" {
		v.fail("state.path", "must name a file")
	}
	v.atLeastOne("state.history.max_entries", c.State.History.MaxEntries)
	if e := c.State.Etcd; e != nil {
		v.etcd(e)
	}
	if c.HAProxy != nil {
		v.haproxy(c.HAProxy)
	}
	v.azure()
	h := c.Health
	if !strings.HasPrefix(h.Path, "/") {
		v.fail("health.path", fmt.Sprintf("must start with /, got %q", h.Path))
	} else if strings.ContainsFunc(h.Path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		v.fail("health.path", fmt.Sprintf("must not contain spaces or control characters (escape them as %%20), got %q", h.Path))
	}
	v.positive("health.interval", h.Interval)
	v.positive("health.timeout", h.Timeout)
	v.atLeastOne("health.rise", h.Rise)
	v.atLeastOne("health.fall", h.Fall)
	if h.Type != HealthHTTP && h.Type != HealthGRPC {
		v.fail("health.type", fmt.Sprintf("want http or grpc, got %q", h.Type))
	}
	p := c.Proxy
	v.atLeastOne("proxy.attempts", p.Attempts)
	v.atLeastOne("proxy.max_holding", p.MaxHolding)
	v.positive("proxy.hold", p.Hold)
	v.positive("proxy.read_header_timeout", p.ReadHeaderTimeout)
	v.positive("proxy.idle_timeout", p.IdleTimeout)
	v.positive("proxy.shutdown_timeout", p.ShutdownTimeout)
	v.positive("proxy.client_read_timeout", p.ClientReadTimeout)
	v.positive("proxy.client_write_timeout", p.ClientWriteTimeout)
	v.positive("proxy.connect_timeout", p.ConnectTimeout)
	v.positive("proxy.instance_write_timeout", p.InstanceWriteTimeout)
	v.positive("proxy.response_header_timeout", p.ResponseHeaderTimeout)
	v.positive("proxy.instance_read_timeout", p.InstanceReadTimeout)
	if h := p.HTTP2; h.MaxConcurrentStreams < 1 || h.MaxConcurrentStreams > 10000 {
		v.fail("proxy.http2.max_concurrent_streams", fmt.Sprintf("want 1 to 10000, got %d", h.MaxConcurrentStreams))
	}
	// HTTP/2's windows: at least its initial 65535, at most 2^31-1 (RFC 9113 6.9).
	if h := p.HTTP2; h.StreamWindow < 65535 || h.StreamWindow > 1<<31-1 {
		v.fail("proxy.http2.stream_window", fmt.Sprintf("want 65535 to 2147483647 bytes, got %d", h.StreamWindow))
	}
	if h := p.HTTP2; h.ConnectionWindow < 65535 || h.ConnectionWindow > 1<<31-1 {
		v.fail("proxy.http2.connection_window", fmt.Sprintf("want 65535 to 2147483647 bytes, got %d", h.ConnectionWindow))
	}
	v.positive("proxy.http2.read_idle_timeout", p.HTTP2.ReadIdleTimeout)
	v.positive("proxy.http2.ping_timeout", p.HTTP2.PingTimeout)
	if p.MaxConnections < 0 {
		v.fail("proxy.max_connections", fmt.Sprintf("must be at least 1, or 0 for the default, got %d", p.MaxConnections))
	}
	if p.MaxConnectionsPerClient < 0 {
		v.fail("proxy.max_connections_per_client", fmt.Sprintf("want a number of connections, or 0 for no cap, got %d", p.MaxConnectionsPerClient))
	}
	if p.RequestBufferBytes < 0 || p.RequestBufferBytes > 16<<20 {
		v.fail("proxy.request_buffer_bytes", fmt.Sprintf("want 0 (off) to 16777216, got %d", p.RequestBufferBytes))
	}
	if p.MaxHeaderBytes < 1024 || p.MaxHeaderBytes > 1<<20 {
		v.fail("proxy.max_header_bytes", fmt.Sprintf("want 1024 to 1048576, got %d", p.MaxHeaderBytes))
	}
	if p.MaxHeaderFields < 8 || p.MaxHeaderFields > 10000 {
		v.fail("proxy.max_header_fields", fmt.Sprintf("want 8 to 10000, got %d", p.MaxHeaderFields))
	}
	sh := c.Shadow
	v.atLeastOne("shadow.queue_size", sh.QueueSize)
	if sh.MaxConns < 1 || sh.MaxConns > 1024 {
		v.fail("shadow.max_conns", fmt.Sprintf("want 1 to 1024, got %d", sh.MaxConns))
	}
	v.atLeastOne("shadow.body_limit", sh.BodyLimit)
	v.atLeastOne("shadow.keep_limit", sh.KeepLimit)
	if sh.CompareLimit < 1 {
		v.fail("shadow.compare_limit", fmt.Sprintf("must be at least 1, got %d", sh.CompareLimit))
	}
	if sh.MaxMemory < 1<<20 {
		v.fail("shadow.max_memory", fmt.Sprintf("want at least 1048576 bytes, got %d", sh.MaxMemory))
	}
	v.positive("shadow.timeout", sh.Timeout)
	if sh.StopErrorRate <= 0 {
		v.fail("shadow.stop_error_rate", fmt.Sprintf("want a fraction above 0 (above 1: never stop), got %g", sh.StopErrorRate))
	}
	v.atLeastOne("shadow.stop_min_requests", sh.StopMinRequests)
	for i, h := range sh.IgnoreHeaders {
		if h == "" || strings.ContainsAny(h, " :\t\r\n") {
			v.fail(fmt.Sprintf("shadow.ignore_headers[%d]", i), fmt.Sprintf("want a header name, got %q", h))
		}
	}
	for i, f := range sh.IgnoreFields {
		if f == "" || f == "$." {
			v.fail(fmt.Sprintf("shadow.ignore_fields[%d]", i), fmt.Sprintf("want a field name or a path such as $.meta.id, got %q", f))
		}
	}
	a := c.Analysis
	v.positive("analysis.window", a.Window)
	v.atLeastOne("analysis.min_requests", a.MinRequests)
	if a.MaxErrorRate < 0 || a.MaxErrorRate > 1 {
		v.fail("analysis.max_error_rate", fmt.Sprintf("want a fraction from 0 to 1 (0.01 is 1%%), got %g", a.MaxErrorRate))
	}
	for key, r := range map[string]float64{"analysis.max_error_rate_ratio": a.MaxErrorRateRatio, "analysis.max_p99_ratio": a.MaxP99Ratio} {
		if r != 0 && r < 1 {
			v.fail(key, fmt.Sprintf("want a factor of at least 1, or 0 for none, got %g", r))
		}
	}
	if len(a.Paths) > maxAnalysisPaths {
		v.fail("analysis.paths", fmt.Sprintf("at most %d path prefixes, got %d", maxAnalysisPaths, len(a.Paths)))
	}
	for i, p := range a.Paths {
		key := fmt.Sprintf("analysis.paths[%d]", i)
		if err := route.CheckPrefix(p); err != nil {
			v.fail(key, err.Error())
		} else if slices.Contains(a.Paths[:i], p) {
			v.fail(key, fmt.Sprintf("%q is listed twice", p))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Rollouts)) {
		v.plan("rollouts."+name, c.Rollouts[name])
	}
	v.positive("measure.before", c.Measure.Before)
	v.positive("measure.after", c.Measure.After)
	v.positive("measure.limit", c.Measure.Limit)
	if c.Log.Format != "text" && c.Log.Format != "json" {
		v.fail("log.format", fmt.Sprintf("want text or json, got %q", c.Log.Format))
	}
	if _, err := c.Log.SlogLevel(); err != nil {
		v.fail("log.level", err.Error())
	}
	if s := c.Log.AccessSample; !(s > 0 && s <= 1) {
		v.fail("log.access_sample", fmt.Sprintf("want a fraction above 0 and at most 1, got %g", s))
	}

	if ck := c.Affinity.Cookie; ck != "" && !cookieName.MatchString(ck) {
		v.fail("affinity.cookie", fmt.Sprintf("want a cookie name (letters, digits, - and _), got %q", ck))
	}
	if c.Affinity.MaxAge < 0 {
		v.fail("affinity.max_age", fmt.Sprintf("want a duration of at least 0 (0: a session cookie), got %s", c.Affinity.MaxAge))
	}
	if h := c.Affinity.PinHeader; h != "" && !headerName.MatchString(h) {
		v.fail("affinity.pin_header", fmt.Sprintf("want a header name such as X-Vipswap-Slot, got %q", h))
	}
	seenRoutes := map[[2]string]int{}
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		if err := route.CheckPrefix(r.PathPrefix); err != nil {
			v.fail(key+".path_prefix", err.Error())
		}
		if r.Header != "" && !headerName.MatchString(r.Header) {
			v.fail(key+".header", fmt.Sprintf("want a header name, got %q", r.Header))
		}
		if r.Header == "" && r.Value != "" {
			v.fail(key+".value", "a value needs a header to match it in")
		}
		if !slotName.MatchString(r.Slot) {
			v.fail(key+".slot", fmt.Sprintf("want a slot name, got %q", r.Slot))
		}
		// A slot this file does not list may have been added at runtime
		// (vipswap slot add): the running vipswap checks it on start and
		// reload, vipswap check warns (UnlistedRouteSlots).
		// /api and /api/ match the same requests.
		id := [2]string{strings.TrimSuffix(r.PathPrefix, "/"), strings.ToLower(r.Header) + "\x00" + r.Value}
		if j, dup := seenRoutes[id]; dup {
			v.fail(key, fmt.Sprintf("matches the same requests as routes[%d]", j))
		}
		seenRoutes[id] = i
	}
	if len(c.SlotOrder) < 2 {
		v.fail("slots", fmt.Sprintf("need at least two slots, got %d", len(c.SlotOrder)))
	}
	for i, name := range c.SlotOrder {
		v.slot(name, c.Slots[name])
		if j := slices.IndexFunc(c.SlotOrder[:i], func(n string) bool { return strings.EqualFold(n, name) }); j >= 0 {
			v.fail("slots."+name, fmt.Sprintf("differs from slot %q only in case: a slot name must say which slot it is whatever its case", c.SlotOrder[j]))
		}
	}
	v.selfReferences()
	if c.Active != "" && len(c.SlotOrder) > 0 {
		if _, ok := c.Slots[c.Active]; !ok {
			v.fail("active", fmt.Sprintf("slot %q is not defined in slots (have %s)", c.Active, strings.Join(c.SlotOrder, ", ")))
		}
	}
	return joinByLine(v.errs)
}

type validator struct {
	c     *Config
	errs  []error
	addrs map[string]string // address -> key that uses it
}

func (v *validator) fail(key, msg string) {
	v.errs = append(v.errs, &Error{File: v.c.file, Line: v.c.lines[key], Key: key, Msg: msg})
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.fail(key, fmt.Sprintf("must be more than zero, got %s", d))
	}
}

func (v *validator) atLeastOne(key string, n int) {
	if n < 1 {
		v.fail(key, fmt.Sprintf("must be at least 1, got %d", n))
	}
}

// addr checks that a is host:port and not used by another key.
// listener checks a listener's address and that its TLS names files; the
// files are read by LoadCertificates.
func (v *validator) listener(key string, l Listener) {
	v.addr(key, l.Addr)
	if l.TLS != nil && l.H2C {
		v.fail(key+".h2c", "h2c is cleartext HTTP/2; a TLS listener offers HTTP/2 by ALPN (http2: true): remove h2c or tls")
	}
	switch l.ProxyProtocol {
	case "", "off", "accept", "require":
	default:
		v.fail(key+".proxy_protocol", fmt.Sprintf("want off, accept or require, got %q", l.ProxyProtocol))
	}
	for i, s := range l.ProxyProtocolFrom {
		if _, err := parsePeer(s); err != nil {
			v.fail(fmt.Sprintf("%s.proxy_protocol_from[%d]", key, i), fmt.Sprintf("want an address or a CIDR prefix (10.0.0.0/8), got %q", s))
		}
	}
	if l.RedirectTo != "" {
		var target *Listener
		switch l.RedirectTo {
		case "prod":
			target = &v.c.Listeners.Prod
		case "stage":
			target = &v.c.Listeners.Stage
		}
		switch {
		case target == nil:
			v.fail(key+".redirect_to", fmt.Sprintf("want the name of a TLS listener (prod or stage), got %q", l.RedirectTo))
		case target.TLS == nil:
			v.fail(key+".redirect_to", fmt.Sprintf("listeners.%s is not a TLS listener: redirect_to must name one", l.RedirectTo))
		case l.TLS != nil:
			v.fail(key+".redirect_to", "a TLS listener cannot redirect: redirect_to is for a cleartext one")
		}
	}
	v.tls(key, l.TLS)
}

// tls checks that a tls block names its files.
func (v *validator) tls(key string, t *ListenerTLS) {
	if t == nil {
		return
	}
	if len(t.Certs) == 0 && t.ACME == nil {
		v.fail(key+".tls.certs", "want at least one certificate: {cert: FILE, key: FILE}, or an acme block")
	}
	if t.ACME != nil && key == "admin" {
		v.fail(key+".tls.acme", "the admin API takes certificates from files only: give certs")
	} else if t.ACME != nil {
		v.acme(key+".tls.acme", t.ACME)
	}
	for i, c := range t.Certs {
		k := fmt.Sprintf("%s.tls.certs[%d]", key, i)
		if c.Cert == "" || c.Key == "" {
			v.fail(k, "want both cert (the PEM chain) and key (its private key)")
		}
	}
}

func (v *validator) addr(key, a string) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		v.fail(key, fmt.Sprintf("invalid address %q: want host:port", a))
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.fail(key, fmt.Sprintf("invalid port in %q", a))
		return
	}
	if port == "0" {
		return // each :0 gets its own port
	}
	norm := net.JoinHostPort(strings.ToLower(host), port)
	if prev, ok := v.addrs[norm]; ok {
		v.fail(key, fmt.Sprintf("duplicate address %s: already used by %s", a, prev))
		return
	}
	v.addrs[norm] = key
}

func (v *validator) slot(name string, s Slot) {
	key := "slots." + name
	if !slotName.MatchString(name) {
		v.fail(key, "slot names use letters, digits, '.', '_' and '-' (at most 63)")
	}
	if strings.EqualFold(name, "none") || strings.EqualFold(name, "retired") {
		v.fail(key, fmt.Sprintf("the slot name %q is reserved: metrics label requests that found no slot, or removed slots, with it", name))
	}
	switch {
	case len(s.Instances) == 0 && s.Run == nil:
		v.fail(key, "set instances or run")
	case len(s.Instances) > 0 && s.Run != nil:
		v.fail(key, "set instances or run, not both")
	case s.Run != nil:
		v.run(key+".run", s.Run)
	}
	for i, a := range s.Instances {
		v.addr(fmt.Sprintf("%s.instances[%d]", key, i), a)
	}
	switch s.ProxyProtocol {
	case "", "off", "v1", "v2":
	default:
		v.fail(key+".proxy_protocol", fmt.Sprintf("want off, v1 or v2, got %q", s.ProxyProtocol))
	}
	switch s.Protocol {
	case ProtocolHTTP1, ProtocolH2C, ProtocolH2, "":
	default:
		v.fail(key+".protocol", fmt.Sprintf("want http1, h2c or h2, got %q", s.Protocol))
	}
	if t := s.TLS; t != nil {
		if s.Protocol == ProtocolH2C {
			v.fail(key+".tls", "protocol h2c is cleartext: use protocol h2 for HTTP/2 over TLS")
		}
		if (t.Cert == "") != (t.Key == "") {
			v.fail(key+".tls", "want both cert (the client certificate) and key (its private key), or neither")
		}
	}
	if s.ProxyProtocolVersion() != 0 && (s.TLS != nil || s.Protocol == ProtocolH2C || s.Protocol == ProtocolH2) {
		v.fail(key+".proxy_protocol", "a PROXY header is sent to cleartext HTTP/1.1 instances only (protocol http1, no tls)")
	}
	if v.c.Health.Type == HealthGRPC && s.Protocol != ProtocolH2C && s.Protocol != ProtocolH2 {
		v.fail(key+".protocol", fmt.Sprintf("health.type grpc needs protocol h2c or h2 (gRPC is HTTP/2), got %s", show(s.Protocol)))
	}
}

func (v *validator) plan(key string, p RolloutPlan) {
	if len(p.Steps) == 0 {
		v.fail(key+".steps", "want the canary's weights, such as [10, 25, 50, 100]")
	}
	prev := 0.0
	for i, s := range p.Steps {
		k := fmt.Sprintf("%s.steps[%d]", key, i)
		switch {
		case s <= prev || s > 100:
			v.fail(k, fmt.Sprintf("want rising percentages above 0 up to 100, got %g after %g", s, prev))
		case math.Abs(s*10-math.Round(s*10)) > 1e-6:
			v.fail(k, fmt.Sprintf("want at most one decimal, got %g", s))
		}
		prev = s
	}
	if len(p.Steps) > 0 && p.Steps[len(p.Steps)-1] != 100 {
		v.fail(key+".steps", fmt.Sprintf("the last step must be 100, got %g", p.Steps[len(p.Steps)-1]))
	}
	if p.Interval < 0 {
		v.fail(key+".interval", fmt.Sprintf("must be more than zero, got %s", p.Interval))
	}
	for i, g := range p.Gates {
		k := fmt.Sprintf("%s.gates[%d]", key, i)
		switch {
		case g.HTTP == "" && len(g.Command) == 0:
			v.fail(k, "set http (a URL that must answer 2xx) or command (which must exit 0)")
		case g.HTTP != "" && !strings.HasPrefix(g.HTTP, "http://") && !strings.HasPrefix(g.HTTP, "https://"):
			v.fail(k+".http", fmt.Sprintf("want an http:// or https:// URL, got %q", g.HTTP))
		}
		if g.Timeout < 0 {
			v.fail(k+".timeout", fmt.Sprintf("must be more than zero, got %s", g.Timeout))
		}
	}
	if sh := p.Shadow; sh != nil {
		k := key + ".shadow"
		v.positive(k+".duration", sh.Duration)
		if sh.Percent < 0 || sh.Percent > 100 {
			v.fail(k+".percent", fmt.Sprintf("want 0.1 to 100, got %g", sh.Percent))
		}
		if sh.MinRequests < 0 {
			v.fail(k+".min_requests", fmt.Sprintf("want 1 or more, got %d", sh.MinRequests))
		}
		rates := map[string]float64{k + ".max_differ_rate": sh.MaxDifferRate}
		if sh.MaxErrorRate != nil {
			rates[k+".max_error_rate"] = *sh.MaxErrorRate
		}
		for name, r := range rates {
			if r < 0 || r > 1 {
				v.fail(name, fmt.Sprintf("want a fraction from 0 to 1 (0.001 is 0.1%%), got %g", r))
			}
		}
		if sh.MaxP99Ratio != 0 && sh.MaxP99Ratio < 1 {
			v.fail(k+".max_p99_ratio", fmt.Sprintf("want a factor of at least 1 (1.2: within 20%%), or 0 for none, got %g", sh.MaxP99Ratio))
		}
	}
}

func (v *validator) run(key string, r *Run) {
	if len(r.Command) == 0 {
		v.fail(key+".command", "must name a program")
	}
	host, port, err := net.SplitHostPort(r.Address)
	_, notIP := netip.ParseAddr(host)
	if err != nil || port != "{port}" || notIP != nil && !hostName.MatchString(host) {
		v.fail(key+".address", fmt.Sprintf("want host:{port}, where each instance listens (such as 127.0.0.1:{port}), got %q", r.Address))
	}
	v.atLeastOne(key+".replicas", r.Replicas)
	v.positive(key+".stop_timeout", r.StopTimeout)
}

// isLoopback reports whether addr's host is a loopback address or
// "localhost". An empty host means every interface: not loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// etcd checks state.etcd and fills in its defaults.
func (v *validator) haproxy(h *HAProxy) {
	if h.Socket == "" {
		v.fail("haproxy.socket", "want the runtime API: a unix socket path (stats socket ... level admin) or 127.0.0.1:PORT")
	}
	if h.Maps.Prod == "" || h.Maps.Stage == "" || h.Maps.Prod == h.Maps.Stage {
		v.fail("haproxy.maps", "want prod and stage: the two map files the frontends choose their backend with, as haproxy.cfg names them")
	}
	for _, m := range []string{h.Maps.Prod, h.Maps.Stage} {
		if strings.ContainsAny(m, " \t\n;") {
			v.fail("haproxy.maps", fmt.Sprintf("map path %q has a space, newline or ';'", m))
		}
	}
	for slot, b := range h.Backends {
		if _, ok := v.c.Slots[slot]; !ok {
			v.fail("haproxy.backends."+slot, "no such slot")
		}
		if b == "" || strings.ContainsAny(b, " \t\n;/") {
			v.fail("haproxy.backends."+slot, fmt.Sprintf("want a backend name, got %q", b))
		}
	}
	// The driver adds servers as plain HTTP/1.1 ("add server BACKEND/NAME
	// ADDR"): TLS or HTTP/2 towards the instances it does not set up.
	for _, slot := range slices.Sorted(maps.Keys(v.c.Slots)) {
		s := v.c.Slots[slot]
		if s.Protocol != ProtocolHTTP1 && s.Protocol != "" || s.TLS != nil {
			v.fail("slots."+slot, "protocol h2c or h2, or tls, is not supported with the HAProxy driver (it adds servers as cleartext HTTP/1.1): leave them out, or drop haproxy:")
		}
	}
	// Each slot needs a backend of its own: two slots in one backend
	// would share servers, and a swap between them would move nothing.
	owner := map[string]string{}
	for _, slot := range slices.Sorted(maps.Keys(v.c.Slots)) {
		b, ok := h.Backends[slot]
		if !ok {
			b = "be_" + slot
		}
		if other, clash := owner[b]; clash {
			key := "haproxy.backends." + slot
			if !ok {
				key = "haproxy.backends." + other
			}
			v.fail(key, fmt.Sprintf("slots %s and %s would share backend %s: each slot needs its own (a slot not listed uses be_<slot>)", other, slot, b))
			continue
		}
		owner[b] = slot
	}
	switch h.Health {
	case "":
		h.Health = "vipswap"
	case "vipswap", "haproxy":
	default:
		v.fail("haproxy.health", fmt.Sprintf("want vipswap or haproxy, got %q", h.Health))
	}
	if h.Timeout == 0 {
		h.Timeout = 2 * time.Second
	}
	if h.Interval == 0 {
		h.Interval = 500 * time.Millisecond
	}
	v.positive("haproxy.timeout", h.Timeout)
	v.positive("haproxy.interval", h.Interval)
}

func (v *validator) etcd(e *Etcd) {
	if _, set := v.c.lines["state.path"]; set {
		v.fail("state.path", "set state.path or state.etcd, not both (with etcd, state.etcd.local_copy names the local file)")
	}
	if len(e.Endpoints) == 0 {
		v.fail("state.etcd.endpoints", "want at least one etcd client URL, such as http://127.0.0.1:2379")
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" {
			v.fail(fmt.Sprintf("state.etcd.endpoints[%d]", i), fmt.Sprintf("want http://host:port or https://host:port, got %q", ep))
		}
	}
	if e.Prefix == "" {
		e.Prefix = "/vipswap/"
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") {
		v.fail("state.etcd.prefix", fmt.Sprintf("want a key prefix that starts and ends with /, such as /vipswap/, got %q", e.Prefix))
	}
	if e.DialTimeout == 0 {
		e.DialTimeout = 5 * time.Second
	}
	if e.RequestTimeout == 0 {
		e.RequestTimeout = 2 * time.Second
	}
	v.positive("state.etcd.dial_timeout", e.DialTimeout)
	v.positive("state.etcd.request_timeout", e.RequestTimeout)
	if e.LocalCopy == "" {
		e.LocalCopy = "vipswap-state.json"
	}
	if (e.TLS.Cert == "") != (e.TLS.Key == "") {
		v.fail("state.etcd.tls", "set both cert and key, or neither")
	}
	if e.Username != "" && e.PasswordFile == "" {
		v.fail("state.etcd.password_file", "a username needs a password_file")
	}
}

// UnlistedRouteSlots returns, one line each, the routes whose slot the
// file does not list: fine for a slot added at runtime, a typo otherwise.
func (c *Config) UnlistedRouteSlots() []string {
	var out []string
	for i, r := range c.Routes {
		if _, ok := c.Slots[r.Slot]; !ok {
			out = append(out, fmt.Sprintf("routes[%d].slot: %q is not in this file (have %s): it must have been added at runtime (vipswap slot add), or the running vipswap refuses the file", i, r.Slot, strings.Join(c.SlotOrder, ", ")))
		}
	}
	return out
}

// maxAnalysisPaths bounds analysis.paths (as the analysis does).
const maxAnalysisPaths = 8
