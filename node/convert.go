package node

import (
	"context"
	"crypto/tls"
	"log/slog"
	"slices"
	"time"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/launch"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/shadow"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// This file turns the configuration into what the controller and the
// data plane take.

// slotsOf returns cfg's membership, run: slots' addresses from groups.
func slotsOf(cfg *config.Config, groups map[string]*launch.Group) []control.Slot {
	var out []control.Slot
	for _, name := range cfg.SlotOrder {
		addrs := cfg.Slots[name].Instances
		if g := groups[name]; g != nil {
			addrs = g.Addrs()
		}
		var run *state.RunSpec
		if r := cfg.Slots[name].Run; r != nil {
			run = &state.RunSpec{Command: r.Command, Address: r.Address, Replicas: r.Replicas, StopTimeout: r.StopTimeout}
		}
		out = append(out, control.Slot{Name: name, Addrs: addrs, Version: cfg.Slots[name].Version, Run: run})
	}
	return out
}

// healthConfig returns the probe settings of cfg.
// probe, when set, replaces vipswap's probes (HAProxy's check results).
// ups are the slots' TLS (config.LoadUpstreams).
func healthConfig(cfg *config.Config, ups map[string]*config.UpstreamTLS, log *slog.Logger, probe func(context.Context, health.Target) health.Check) health.Config {
	h := cfg.Health
	tr := map[string]health.Transport{}
	for name, s := range cfg.Slots {
		t := health.Transport{Protocol: s.Protocol}
		if u := ups[name]; u != nil {
			t.TLS = u.Config
		}
		tr[name] = t
	}
	return health.Config{Path: h.Path, Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall, Logger: log, Probe: probe,
		Type: h.Type, Transports: tr, ProxyProtocol: sendProxyProtocol(cfg)}
}

// upstreamsOf returns how the proxy reaches each slot's instances: its
// protocol and TLS (ups, from config.LoadUpstreams).
func upstreamsOf(cfg *config.Config, ups map[string]*config.UpstreamTLS) map[string]*proxy.Upstream {
	out := map[string]*proxy.Upstream{}
	for name, s := range cfg.Slots {
		u := &proxy.Upstream{Protocol: proxy.Protocol(s.Protocol)}
		if t := ups[name]; t != nil {
			u.TLS, u.Fingerprint = t.Config, t.Fingerprint
		}
		out[name] = u
	}
	return out
}

// analysisConfig returns the rollout analysis of cfg.
func analysisConfig(cfg *config.Config) state.Analysis {
	a := cfg.Analysis
	return state.Analysis{Window: a.Window, MinRequests: a.MinRequests, MaxErrorRate: a.MaxErrorRate,
		MaxP99: a.MaxP99, MaxErrorRateRatio: a.MaxErrorRateRatio, MaxP99Ratio: a.MaxP99Ratio, Paths: a.Paths}
}

// routesOf returns cfg's version routes for the routing table.
func routesOf(cfg *config.Config) []route.Route {
	var out []route.Route
	for _, r := range cfg.Routes {
		out = append(out, route.Route{PathPrefix: r.PathPrefix, Header: r.Header, Value: r.Value, Slot: r.Slot})
	}
	return out
}

// plansOf returns the named rollout plans of cfg.
func plansOf(cfg *config.Config) map[string]rollout.Plan {
	out := map[string]rollout.Plan{}
	for name, p := range cfg.Rollouts {
		var plan rollout.Plan
		for _, s := range p.Steps {
			pm, _ := rollout.PerMille(s) // validated with the configuration
			plan.Steps = append(plan.Steps, pm)
		}
		plan.Interval, plan.Pause = p.Interval, p.Pause
		for _, g := range p.Gates {
			plan.Gates = append(plan.Gates, state.Gate{HTTP: g.HTTP, Command: g.Command, Timeout: g.Timeout})
		}
		if sh := p.Shadow; sh != nil {
			plan.Shadow = &wire.ShadowGate{Duration: sh.Duration.String(), Percent: sh.Percent, Methods: sh.Methods,
				MinRequests: sh.MinRequests, MaxDifferRate: sh.MaxDifferRate, MaxErrorRate: sh.MaxErrorRate,
				MaxP99Ratio: sh.MaxP99Ratio, IgnoreFields: sh.IgnoreFields, IgnoreHeaders: sh.IgnoreHeaders}
		}
		out[name] = plan
	}
	return out
}

// measureConfig returns the measurement window of cfg.
func measureConfig(cfg *config.Config) control.Measure {
	return control.Measure{Before: cfg.Measure.Before, After: cfg.Measure.After, Limit: cfg.Measure.Limit}
}

// sendProxyProtocol returns the PROXY protocol version of each slot that
// sends one to its instances (slots.NAME.proxy_protocol), nil for none.
func sendProxyProtocol(cfg *config.Config) map[string]int {
	var out map[string]int
	for name, s := range cfg.Slots {
		if v := s.ProxyProtocolVersion(); v != 0 {
			if out == nil {
				out = map[string]int{}
			}
			out[name] = v
		}
	}
	return out
}

// proxyOptions returns the data plane's options from the configuration,
// with the connection limits shared out of the descriptors vipswap may
// open unless the configuration sets them.
func proxyOptions(cfg *config.Config, ups map[string]*config.UpstreamTLS, log *slog.Logger, onRefused func(*route.Instance)) proxy.Options {
	p := cfg.Proxy
	budget := proxy.BudgetFor(proxy.DescriptorLimit())
	maxConns := p.MaxConnections
	if maxConns == 0 {
		maxConns = budget.MaxConns
	}
	perClient := perClientCap(p.MaxConnectionsPerClient, maxConns)
	if budget.Descriptors > 0 {
		log.Info("connection limits", "descriptors", budget.Descriptors, "max_connections_per_listener", maxConns,
			"max_connections_per_client", perClient,
			"max_idle_instance_connections", budget.MaxIdleConns, "reserved", budget.Reserve)
		if 2*maxConns > budget.Descriptors-budget.Reserve {
			log.Warn("proxy.max_connections leaves too few descriptors for the instance connections; raise LimitNOFILE (ulimit -n) or lower it",
				"max_connections", maxConns, "descriptors", budget.Descriptors)
		}
	}
	return proxy.Options{
		Affinity:              proxy.Affinity{Cookie: cfg.Affinity.Cookie, MaxAge: cfg.Affinity.MaxAge},
		PinHeader:             cfg.Affinity.PinHeader,
		Attempts:              p.Attempts,
		Hold:                  p.Hold,
		MaxHolding:            p.MaxHolding,
		ReadHeaderTimeout:     p.ReadHeaderTimeout,
		IdleTimeout:           p.IdleTimeout,
		ClientReadTimeout:     p.ClientReadTimeout,
		ClientWriteTimeout:    p.ClientWriteTimeout,
		ConnectTimeout:        p.ConnectTimeout,
		InstanceWriteTimeout:  p.InstanceWriteTimeout,
		ResponseHeaderTimeout: p.ResponseHeaderTimeout,
		InstanceReadTimeout:   p.InstanceReadTimeout,
		MaxConns:              maxConns,
		MaxConnsPerClient:     perClient,
		MaxIdleConns:          budget.MaxIdleConns,
		MaxHeaderBytes:        p.MaxHeaderBytes,
		MaxHeaderFields:       p.MaxHeaderFields,
		RequestBuffer:         requestBuffer(p.RequestBufferBytes),
		HTTP2: proxy.HTTP2Limits{
			H2MaxConcurrentStreams: p.HTTP2.MaxConcurrentStreams,
			H2StreamWindow:         p.HTTP2.StreamWindow,
			H2ConnWindow:           p.HTTP2.ConnectionWindow,
			H2ReadIdleTimeout:      p.HTTP2.ReadIdleTimeout,
			H2PingTimeout:          p.HTTP2.PingTimeout,
		},
		OnRefused:         onRefused,
		Upstreams:         upstreamsOf(cfg, ups),
		AccessLog:         accessLog(cfg.Log, log),
		SendProxyProtocol: sendProxyProtocol(cfg),
		Logger:            log,
	}
}

// perClientCap is the per-client connection cap in force: the setting,
// but never more than half the listener's limit, so that one client
// cannot hold more than half of it; 0 (no cap) stays 0.
func perClientCap(setting, maxConns int) int {
	if setting <= 0 || maxConns <= 0 {
		return setting
	}
	return min(setting, max(maxConns/2, 1))
}

// adminConns is how many connections the admin API serves at once: a
// quarter of the reserved descriptors, at least 8 and at most 256.
func adminConns(b proxy.Budget) int {
	return min(max(b.Reserve/4, 8), 256)
}

// maxStopTimeout is the longest stop timeout of the run: slots, which
// bounds how long stopping a previous run's instances may take.
func maxStopTimeout(cfg *config.Config) time.Duration {
	d := 10 * time.Second
	for _, s := range cfg.Slots {
		if s.Run != nil {
			d = max(d, s.Run.StopTimeout)
		}
	}
	return d
}

// accessLog returns the proxy's access log, or nil when it is off.
func accessLog(c config.Log, log *slog.Logger) *proxy.AccessLog {
	if !c.Access {
		return nil
	}
	return &proxy.AccessLog{Logger: log.With("log", "access"), Sample: c.AccessSample}
}

// requestBuffer maps proxy.request_buffer_bytes (0: off) to
// proxy.Options.RequestBuffer (negative: off).
func requestBuffer(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// certificateStatus says what listener l serves now, for status: each
// certificate's names and expiry, the default first; nil for cleartext.
func (n *node) certificateStatus(l route.Listener) []wire.CertificateStatus {
	conf := n.certs[l].Load()
	if conf == nil {
		return nil
	}
	return append(describeForStatus(conf), n.acmeStatus(l)...)
}

// describeForStatus says which certificates conf serves: each one's names
// (DNS names, then IP addresses, else its common name) and expiry.
func describeForStatus(conf *tls.Config) []wire.CertificateStatus {
	if conf == nil {
		return nil
	}
	var out []wire.CertificateStatus
	for _, c := range conf.Certificates {
		if c.Leaf == nil {
			continue
		}
		names := slices.Clone(c.Leaf.DNSNames)
		for _, ip := range c.Leaf.IPAddresses {
			names = append(names, ip.String())
		}
		if len(names) == 0 && c.Leaf.Subject.CommonName != "" {
			names = []string{c.Leaf.Subject.CommonName}
		}
		out = append(out, wire.CertificateStatus{Names: names, NotAfter: c.Leaf.NotAfter.UTC()})
	}
	return out
}

// newMirror returns the mirror of vipswap shadow for cfg's shadow block,
// sending its copies through px; onStop ends the shadow when the mirror
// stops by itself.
func newMirror(cfg *config.Config, px *proxy.Proxy, onStop func(started time.Time, why string)) *shadow.Mirror {
	sh := cfg.Shadow
	return shadow.New(shadow.Options{
		QueueSize: sh.QueueSize, MaxConns: sh.MaxConns, BodyLimit: sh.BodyLimit, CompareLimit: int64(sh.CompareLimit),
		KeepLimit: sh.KeepLimit, MaxMemory: int64(sh.MaxMemory), Timeout: sh.Timeout,
		IgnoreFields: sh.IgnoreFields, IgnoreHeaders: sh.IgnoreHeaders,
		StopErrorRate: sh.StopErrorRate, StopMinRequests: sh.StopMinRequests,
		AffinityCookie: cfg.Affinity.Cookie, OnStop: onStop, Sender: px, BusyWait: busyWait(sh.BusyWait),
	})
}

// busyWait is shadow.busy_wait as shadow.Options take it: 0s (never) is
// negative there.
func busyWait(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
