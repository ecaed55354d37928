package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/launch"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// reloading is a configuration file read for a reload, before it is
// applied.
type reloading struct {
	cfg         *config.Config
	changes     []string    // what it changes, for the history
	tokens      []api.Token // admin.token_file's, re-read
	affinityKey []byte      // affinity.key_file's, re-read
	// tlsConf are the TLS listeners' certificates, re-read (nil for a
	// cleartext listener).
	tlsConf [2]*tls.Config
	// adminConf is the admin API's, re-read (nil for cleartext).
	adminConf *tls.Config
	// upstreams are the slots' TLS to their instances, re-read.
	upstreams map[string]*config.UpstreamTLS
}

// unchanged is the error of a reload that changes nothing, saying why.
func unchanged(err error) error {
	return fmt.Errorf("the configuration in force is unchanged: %w", err)
}

// reload re-reads the configuration file (one complete version of it,
// config.Load) and applies what changed, or changes nothing and says why:
// the file is invalid or was changing while it was read, it changes what
// needs a restart (listen addresses, the store, the admin API, a run:
// slot's command), or it would leave a slot that takes prod traffic
// without a routable instance (unless req.Force). Slots it adds start
// (their managed instances too) and take traffic once healthy; slots it
// removes must not take traffic, and their managed instances stop once out
// of the routing table. A dry run reports what would change.
func (n *node) reload(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	next, err := n.read(ctx, req)
	if err != nil {
		return wire.Change{Operation: "reload"}, err
	}
	if req.DryRun {
		res, err := n.ctrl.Reload(ctx, control.Reload{Slots: slotsOf(next.cfg, n.sup.current()), Routes: routesOf(next.cfg), Request: req})
		res.Changes = next.changes
		return res, err
	}
	// Start the new run: slots first: the controller needs their addresses.
	groups, started, err := n.startGroups(next.cfg)
	if err != nil {
		return wire.Change{Operation: "reload"}, n.ctrl.RefuseReload(ctx, req, next.changes, unchanged(err))
	}
	res, err := n.ctrl.Reload(ctx, control.Reload{
		Slots: slotsOf(next.cfg, groups), Health: healthConfig(next.cfg, next.upstreams, n.log, n.probe), Measure: measureConfig(next.cfg),
		Analysis: analysisConfig(next.cfg), Plans: plansOf(next.cfg), Routes: routesOf(next.cfg), AffinityKey: next.affinityKey,
		Changes: next.changes, Request: req,
	})
	if err == nil && !res.Applied {
		err = errors.New(res.Refused)
	}
	if err != nil {
		n.sup.forget(started)
		return res, err
	}
	res.Changes = next.changes
	n.commit(next, groups)
	return res, nil
}

// read reads the configuration file for a reload and what it changes; a
// file that cannot be applied is refused (recorded in the history) with
// the reason.
func (n *node) read(ctx context.Context, req wire.ChangeRequest) (*reloading, error) {
	cfg, err := config.Load(n.path)
	if err != nil {
		return nil, n.ctrl.RefuseReload(ctx, req, nil, unchanged(errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))))
	}
	diff := n.cfg.Compare(cfg)
	if len(diff.Restart) > 0 {
		return nil, n.ctrl.RefuseReload(ctx, req, diff.Changes, unchanged(errors.New(n.needsRestart(diff.Restart))))
	}
	next := &reloading{cfg: cfg, changes: diff.Changes}
	if cfg.Admin.TokenFile != "" {
		if next.tokens, err = api.LoadTokens(cfg.Admin.TokenFile); err != nil {
			return nil, n.ctrl.RefuseReload(ctx, req, diff.Changes, unchanged(err))
		}
	}
	if cfg.Affinity.KeyFile != "" {
		if next.affinityKey, err = config.LoadAffinityKey(cfg.Affinity.KeyFile); err != nil {
			return nil, n.ctrl.RefuseReload(ctx, req, diff.Changes, unchanged(err))
		}
	}
	for i, l := range []config.Listener{cfg.Listeners.Prod, cfg.Listeners.Stage} {
		if l.TLS == nil {
			continue
		}
		name := []string{"listeners.prod", "listeners.stage"}[i]
		certs, err := config.LoadCertificates(name, l.TLS)
		if err != nil {
			return nil, n.ctrl.RefuseReload(ctx, req, diff.Changes, unchanged(err))
		}
		// HTTP/2 by ALPN as the listener started: changing it takes a restart.
		next.tlsConf[i] = n.withACME(route.Listener(i), listenerTLS(certs, []config.Listener{n.initial.Listeners.Prod, n.initial.Listeners.Stage}[i].HTTP2))
		if cur := n.certs[i].Load(); cur == nil || !sameCertificates(cur.Certificates, certs) {
			next.changes = append(next.changes, fmt.Sprintf("%s.tls: certificates re-read (%s)", name, describeCertificates(certs)))
		}
	}
	if t := cfg.Admin.TLS; t != nil && n.adminTLS != nil {
		certs, err := config.LoadCertificates("admin", t)
		if err != nil {
			return nil, n.ctrl.RefuseReload(ctx, req, diff.Changes, unchanged(err))
		}
		next.adminConf = listenerTLS(certs, false)
		if !sameCertificates(n.adminCerts.Load().Certificates, certs) {
			next.changes = append(next.changes, fmt.Sprintf("admin.tls: certificates re-read (%s)", describeCertificates(certs)))
		}
	}
	if next.upstreams, err = config.LoadUpstreams(cfg); err != nil {
		return nil, n.ctrl.RefuseReload(ctx, req, diff.Changes, unchanged(err))
	}
	for _, name := range cfg.SlotOrder {
		cur, now := n.upstreams[name], next.upstreams[name]
		if cur != nil && now != nil && cur.Fingerprint != now.Fingerprint && reflect.DeepEqual(n.cfg.Slots[name].TLS, cfg.Slots[name].TLS) {
			next.changes = append(next.changes, fmt.Sprintf("slots.%s.tls: files re-read (changed)", name))
		}
	}
	if !n.tokens.Same(next.tokens) {
		names := make([]string, len(next.tokens))
		for i, t := range next.tokens {
			names[i] = t.Name
		}
		next.changes = append(next.changes, fmt.Sprintf("admin.token_file: tokens re-read (%s)", strings.Join(names, ", ")))
	}
	return next, nil
}

// needsRestart says why changes (config.Diff.Restart) cannot be reloaded,
// and which of the slots they touch a deploy has changed since (a restart
// would not apply those either).
func (n *node) needsRestart(changes []string) string {
	why := "these changes need a restart of vipswap: " + strings.Join(changes, "; ")
	for _, o := range n.ctrl.RunOverrides() {
		if slot, _, _ := strings.Cut(strings.TrimPrefix(o, "slots."), ":"); strings.Contains(why, "slots."+slot+".") {
			why += "; but " + o + ", after a restart too: vipswap deploy or rolling changes it"
		}
	}
	return why
}

// startGroups returns the managed instance groups cfg runs, by slot: the
// running ones it keeps, and those of its new run: slots, which it starts
// (started). Slots added at runtime keep theirs; slots removed at runtime
// get none. When a group does not start, it stops those it started and
// says which slot failed.
func (n *node) startGroups(cfg *config.Config) (groups, started map[string]*launch.Group, err error) {
	current := n.sup.current()
	groups, started = map[string]*launch.Group{}, map[string]*launch.Group{}
	removed := n.ctrl.Removed()
	for name := range n.ctrl.Managed() { // added at runtime: the file does not list them
		if g := current[name]; g != nil {
			groups[name] = g
		}
	}
	for _, name := range cfg.SlotOrder {
		s := cfg.Slots[name]
		if s.Run == nil || slices.Contains(removed, name) {
			continue // removed at runtime: the state keeps it removed
		}
		if g := current[name]; g != nil {
			groups[name] = g
			continue
		}
		g, err := n.sup.start(name, s)
		if err != nil {
			n.sup.forget(started)
			return nil, nil, fmt.Errorf("slots.%s: %w", name, err)
		}
		started[name], groups[name] = g, g
		n.sup.add(name, g) // so a second signal kills it too
	}
	return groups, started, nil
}

// commit makes next the configuration in force, once the controller has
// applied it: groups are the managed instances from now on, the others
// stop (the controller has taken their slots out of the routing table:
// they finish what is in flight).
func (n *node) commit(next *reloading, groups map[string]*launch.Group) {
	stopping := n.sup.replaceAll(groups)
	n.cfg = next.cfg
	n.upstreams = next.upstreams
	n.tokens.Set(next.tokens)
	for i, conf := range next.tlsConf {
		if conf != nil {
			n.certs[i].Store(conf) // new handshakes take them; open connections go on
		}
	}
	if next.adminConf != nil {
		n.adminCerts.Store(next.adminConf)
	}
	n.logs.set(next.cfg.Log)
	opts := proxyOptions(next.cfg, next.upstreams, n.log, n.onRefused)
	n.px.Reconfigure(opts)
	n.mirror.SetHints(next.cfg.Affinity.Cookie)
	for _, g := range stopping {
		g.Close()
	}
}

// sameCertificates reports whether a and b are the same chains in the same
// order.
func sameCertificates(a, b []tls.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y tls.Certificate) bool {
		return slices.EqualFunc(x.Certificate, y.Certificate, bytes.Equal)
	})
}

// describeCertificates says what certs are for and until when:
// "www.example.com until 2027-03-01; api.example.com until 2027-02-01".
func describeCertificates(certs []tls.Certificate) string {
	var parts []string
	for _, c := range certs {
		if c.Leaf == nil {
			continue
		}
		name := c.Leaf.Subject.CommonName
		if len(c.Leaf.DNSNames) > 0 {
			name = c.Leaf.DNSNames[0]
		} else if len(c.Leaf.IPAddresses) > 0 {
			name = c.Leaf.IPAddresses[0].String()
		}
		parts = append(parts, name+" until "+c.Leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return strings.Join(parts, "; ")
}
