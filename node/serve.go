package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/dashboard"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/launch"
	"github.com/vipswap/vipswap/metrics"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/proxy/h1"
	"github.com/vipswap/vipswap/proxy/proxyproto"
	"github.com/vipswap/vipswap/release"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/shadow"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/wire"
	"golang.org/x/net/netutil"
)

// node is a running vipswap: what serve builds, in order, and what a
// reload changes.
type node struct {
	path     string         // the configuration file, for reloads
	initial  *config.Config // the configuration the node started with
	version  string
	ho       *handover // upgrades (upgrade.go); nil when the process does not hand over
	logs     *logSwitch
	log      *slog.Logger
	sup      *supervisor
	cleanups []func() // what close undoes, in reverse

	affinityKey              []byte
	prodLn, stageLn, adminLn net.Listener
	certs                    [2]atomic.Pointer[tls.Config] // what the TLS listeners serve (prod, stage); a reload replaces it
	tickets                  *ticketKeys                   // the TLS servers' session ticket keys, shared through the store
	adminCerts               atomic.Pointer[tls.Config]    // what the admin API serves over TLS (admin.tls); a reload replaces it
	adminTLS                 *tls.Config                   // the admin listener's, nil for cleartext
	acme                     acmeListeners                 // the TLS listeners' automatic certificates (acme.go)
	st                       *openedStore
	px                       *proxy.Proxy
	mirror                   *shadow.Mirror // the built-in proxy's, for vipswap shadow
	ctrl                     *control.Controller
	admin                    *http.Server
	errc                     chan error                                        // a listener's failure
	onRefused                func(*route.Instance)                             // the proxy's, kept across reloads
	probe                    func(context.Context, health.Target) health.Check // HAProxy's view, when it is the health in use

	mu  sync.Mutex // serialises reloads; guards cfg and upstreams
	cfg *config.Config
	// upstreams are the slots' TLS to their instances, by slot (read at
	// start, re-read by every reload).
	upstreams map[string]*config.UpstreamTLS
	tokens    *api.TokenSet // the admin API's, re-read by every reload
}

// newNode returns the node setup describes, logging to log (on logs),
// before anything is opened or started.
func newNode(setup Setup, logs *logSwitch, log *slog.Logger) *node {
	return &node{path: setup.Path, version: setup.Version, logs: logs, log: log, initial: setup.Config, cfg: setup.Config,
		sup: newSupervisor(setup.Stderr, log), errc: make(chan error, 3), tickets: &ticketKeys{log: log}}
}

// serve runs the node until ctx ends, then shuts down in order: stop
// accepting and finish in-flight requests, stop the controller, stop managed
// instances, close the store. Everything opened is closed on every path.
// When force is closed (a second signal), it kills the managed instances
// and exits the process at once. Each value from hup reloads the file.
func serve(ctx context.Context, n *node, force <-chan struct{}, hup <-chan os.Signal) error {
	defer n.close()
	n.log.Debug("starting", "config", n.path, "version", n.version) // debug: a refusal to start stays one line
	// A second signal stops vipswap at once, from the very start (a token
	// file that blocks, a leftover instance that ignores SIGTERM) until
	// everything else has stopped: this cleanup runs last.
	forced := make(chan struct{})
	n.onClose(func() { close(forced) })
	go func() {
		select {
		case <-force:
			n.log.Error("second signal: stopping at once; requests in flight are cut off")
			n.sup.killAll()
			os.Exit(ExitForced)
		case <-forced:
		}
	}()
	if err := n.open(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil // stopped while starting: nothing is running yet
	}
	if err := n.start(ctx); err != nil {
		return err
	}
	err := n.wait(ctx, hup)
	n.shutdown()
	if err == nil {
		n.log.Info("stopped")
	}
	return err
}

// onClose adds f to what close undoes.
func (n *node) onClose(f func()) { n.cleanups = append(n.cleanups, f) }

// close undoes what open and start did, in reverse.
func (n *node) close() {
	for i := len(n.cleanups) - 1; i >= 0; i-- {
		n.cleanups[i]()
	}
	n.cleanups = nil
}

// open reads the files the configuration names, binds every address and
// opens the store and the ledger of managed instances, stopping what a
// previous run that was killed left running. Nothing runs yet.
func (n *node) open() error {
	cfg := n.initial
	var tokens []api.Token
	var err error
	if cfg.Admin.TokenFile != "" {
		if tokens, err = api.LoadTokens(cfg.Admin.TokenFile); err != nil {
			return err
		}
	}
	n.tokens = api.NewTokenSet(tokens)
	if cfg.Affinity.KeyFile != "" {
		if n.affinityKey, err = config.LoadAffinityKey(cfg.Affinity.KeyFile); err != nil {
			return err
		}
	}
	if err := n.loadACMERoots(); err != nil {
		return err
	}
	if err := n.bind(); err != nil {
		return err
	}
	if n.st, err = openStore(cfg, n.log); err != nil {
		return err
	}
	n.onClose(func() { n.st.Close() })
	if err := n.openACME(); err != nil {
		return err
	}
	// With the state file locked, no other vipswap uses its ledger: stop
	// what a previous run that was killed left running. (With etcd, each
	// node has its own local copy, and the ledger beside it.)
	ledger, err := launch.OpenLedger(cfg.State.LocalBase()+".instances", n.log)
	if err != nil {
		return err
	}
	n.sup.ledger = ledger
	var rel *os.File
	if n.takingOver() {
		rel, _ = n.ho.upg.Fds.File(releaseFile)
	}
	if rel != nil {
		// The process this one replaces runs its instances and hands
		// them over: adopt them, stop nothing of theirs.
		n.prepareAdoption(ledger, rel)
	} else if _, err := ledger.Reclaim(maxStopTimeout(cfg)); err != nil {
		n.log.Warn("could not look for instances a previous run left running", "err", err)
	}
	n.onClose(func() { ledger.Close() })
	return nil
}

// listenerTLS is a TLS listener's configuration: TLS 1.2 and 1.3; for 1.2
// only ECDHE with AES-GCM or ChaCha20-Poly1305, as in Mozilla's
// "intermediate" profile (1.3's suites are all of that kind); the
// certificate a client asks for by name (SNI) or else the first; HTTP/2
// (when http2) and HTTP/1.1 by ALPN, HTTP/2 preferred. Session tickets
// are on, their keys made and rotated by the process.
func listenerTLS(certs []tls.Certificate, http2 bool) *tls.Config {
	protos := []string{"http/1.1"}
	if http2 {
		protos = []string{"h2", "http/1.1"}
	}
	return &tls.Config{
		Certificates: certs,
		MinVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: protos,
	}
}

// withProxyProtocol wraps ln to read the PROXY protocol header its
// configuration asks for (before TLS: the header comes first), from the
// peers it trusts; the header is read on each connection's goroutine.
func withProxyProtocol(ln net.Listener, conf config.Listener) net.Listener {
	mode := proxyproto.Off
	switch conf.ProxyProtocol {
	case "accept":
		mode = proxyproto.Accept
	case "require":
		mode = proxyproto.Require
	}
	if mode == proxyproto.Off {
		return ln
	}
	return &proxyproto.Listener{Listener: ln, Mode: mode, Trusted: proxyproto.TrustList(conf.ProxyProtocolPeers())}
}

// bind binds every address before anything starts, so a taken port fails
// fast and leaves nothing behind.
func (n *node) bind() error {
	bind := func(name, addr string) (net.Listener, error) {
		ln, err := n.listenOn(name, addr)
		if err != nil {
			return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
		}
		n.onClose(func() { ln.Close() })
		return ln, nil
	}
	// Every listener's certificates are read before any address is bound:
	// a bad certificate leaves nothing behind.
	load := func(name string, l config.Listener) ([]tls.Certificate, error) {
		if l.TLS == nil {
			return nil, nil
		}
		return config.LoadCertificates(name, l.TLS)
	}
	var certs [2][]tls.Certificate
	var err error
	if certs[route.Prod], err = load("listeners.prod", n.initial.Listeners.Prod); err != nil {
		return err
	}
	if certs[route.Stage], err = load("listeners.stage", n.initial.Listeners.Stage); err != nil {
		return err
	}
	// The slots' TLS to their instances too.
	if n.upstreams, err = config.LoadUpstreams(n.initial); err != nil {
		return err
	}
	var adminCerts []tls.Certificate
	if t := n.initial.Admin.TLS; t != nil {
		if adminCerts, err = config.LoadCertificates("admin", t); err != nil {
			return err
		}
	}
	front := func(name string, l route.Listener, conf config.Listener) (net.Listener, error) {
		ln, err := bind(name, conf.Addr)
		if err != nil {
			return ln, err
		}
		ln = withProxyProtocol(ln, conf)
		if conf.TLS == nil {
			return ln, nil
		}
		n.certs[l].Store(listenerTLS(certs[l], conf.HTTP2))
		outer := &tls.Config{
			// Each handshake takes the certificates in force: a reload
			// replaces them for new connections, open ones go on.
			GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) { return n.handshakeConfig(l, hello) },
		}
		n.tickets.add(outer) // this one's session ticket keys serve: those in force have none
		// h1's listener lets an answer go out within the wait for the
		// next request, as on cleartext connections.
		return h1.NewTLSListener(ln, outer), nil
	}
	if n.prodLn, err = front("listeners.prod", route.Prod, n.initial.Listeners.Prod); err != nil {
		return err
	}
	if n.stageLn, err = front("listeners.stage", route.Stage, n.initial.Listeners.Stage); err != nil {
		return err
	}
	if n.adminLn, err = bind("admin.listen", n.initial.Admin.Listen); err != nil || adminCerts == nil {
		return err
	}
	// The admin API over TLS: the listeners' profile, its certificates
	// re-read by a reload, the shared session ticket keys.
	n.adminCerts.Store(listenerTLS(adminCerts, false))
	n.adminTLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return n.adminCerts.Load(), nil }}
	n.tickets.add(n.adminTLS)
	return nil
}

// start starts the managed instances, the controller and its data planes,
// the release runner and the admin API, and serves the listeners.
func (n *node) start(ctx context.Context) error {
	n.onClose(n.sup.closeAll)
	n.startTickets()
	if err := n.startInstances(ctx); err != nil {
		return err
	}
	if err := n.startController(ctx); err != nil {
		return err
	}
	for _, o := range n.ctrl.RunOverrides() {
		n.log.Warn(o + ": vipswap deploy or rolling changes it")
	}
	releases := release.New(release.Config{Controller: n.ctrl, Logger: n.log, AllowRun: func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.cfg.Admin.AllowRun
	}})
	n.onClose(releases.Close) // before the controller closes
	n.admin = n.adminServer(releases)
	n.startACME()
	if err := n.readyToServe(ctx); err != nil {
		return err
	}
	if err := releaseBinaryPages(); err != nil {
		n.log.Debug("the binary's pages were not given back", "err", err) // a kernel before 5.4 has no MADV_PAGEOUT
	}
	n.listen()
	n.serving()
	if err := n.ready(); err != nil {
		return err
	}
	n.noteServing(time.Duration(startToReady.Load()))
	return nil
}

// startTickets reads the TLS session ticket keys from the store (a
// request timeout at most) and keeps them fresh until close.
func (n *node) startTickets() {
	secrets, ok := n.st.Store.(store.Secrets)
	if !ok || len(n.tickets.confs) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := n.tickets.refresh(rctx, secrets, time.Now())
	cancel()
	if err != nil {
		n.log.Warn("could not read the TLS session ticket keys from the store: until it answers, each node uses its own", "err", err)
	}
	tctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.tickets.run(tctx, secrets) }()
	n.onClose(func() { stop(); <-done })
}

// startInstances starts the managed instances: those of the slots added
// at runtime (the stored state's) and those of the file's run: slots,
// unless removed at runtime or redeployed (a deploy's run block replaces
// the file's).
func (n *node) startInstances(ctx context.Context) error {
	stored := n.st.lastState(ctx)
	for _, name := range slices.Sorted(maps.Keys(stored.Slots)) { // managed slots added at runtime
		if run := stored.Slots[name].Run; run != nil {
			if err := n.sup.Launch(name, *run, stored.Slots[name].Version); err != nil {
				return fmt.Errorf("slot %s (added at runtime): %w", name, err)
			}
		}
	}
	for _, name := range n.initial.SlotOrder {
		if s := n.initial.Slots[name]; s.Run != nil && !slices.Contains(stored.Removed, name) && stored.Slots[name].Run == nil {
			g, err := n.sup.start(name, s)
			if err != nil {
				return err
			}
			n.sup.add(name, g) // a second signal may kill them meanwhile
		}
	}
	return nil
}

// lead returns this node's name and whether it drives rollouts: always
// with the state file; in a cluster, while it holds etcd's lease.
func (n *node) lead() (string, func() bool) {
	name := nodeName(n.adminLn.Addr().String())
	if n.st.etcd == nil {
		return name, func() bool { return true }
	}
	lctx, stopLeading := context.WithCancel(context.Background())
	l := n.st.etcd.Lead(lctx, "rollouts", name, func(on bool) {
		if on {
			n.log.Info("this node drives rollouts now", "node", name)
		}
	})
	n.onClose(func() { stopLeading(); <-l.Done() })
	return name, l.Leading
}

// dataPlanes starts the data planes: vipswap's proxy, and HAProxy when
// configured; counts sums their counters.
func (n *node) dataPlanes(leading func() bool) (planes []control.DataPlane, counts func(route.Listener) map[string]route.Counts, err error) {
	n.onRefused = func(i *route.Instance) { n.ctrl.InstanceRefused(i) }
	opts := proxyOptions(n.initial, n.upstreams, n.log, n.onRefused)
	opts.RedirectPort = n.redirectPorts()
	n.px = proxy.New(opts)
	n.mirror = newMirror(n.initial, n.px, func(started time.Time, why string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.ctrl.ShadowStopped(ctx, started, why)
	})
	n.onClose(n.mirror.Close)
	n.px.SetMirror(n.mirror)
	planes, counts = []control.DataPlane{n.px}, n.px.Counters
	if n.initial.HAProxy != nil {
		hx := newHAProxyPlane(n.initial.HAProxy, n.log)
		n.onClose(hx.Close)
		planes = append(planes, hx)
		counts = func(l route.Listener) map[string]route.Counts {
			return route.SumCounts(n.px.Counters(l), hx.Counts(l))
		}
		if n.initial.HAProxy.Health == "haproxy" {
			n.probe = hx.Probe
		}
	}
	az, probe, err := azurePlane(n.initial, leading, n.log)
	if err != nil {
		return nil, nil, err
	}
	if az != nil {
		if c, ok := az.(interface{ Close() }); ok {
			n.onClose(c.Close)
		}
		planes = append(planes, az)
		if probe != nil {
			n.probe = probe
		}
	}
	return planes, counts, nil
}

// redirectPorts returns, for each listener with redirect_to, the port its
// target listener is bound to.
func (n *node) redirectPorts() (ports [len(route.Listeners)]int) {
	bound := map[string]net.Listener{"prod": n.prodLn, "stage": n.stageLn}
	for i, l := range []config.Listener{n.initial.Listeners.Prod, n.initial.Listeners.Stage} {
		if ln := bound[l.RedirectTo]; ln != nil {
			ports[i] = ln.Addr().(*net.TCPAddr).Port
		}
	}
	return ports
}

// startController starts the data planes and the controller over them,
// which starts the health checks; in a cluster, it follows the instances
// that register themselves.
func (n *node) startController(ctx context.Context) error {
	cfg := n.initial
	name, leading := n.lead()
	planes, counts, err := n.dataPlanes(leading)
	if err != nil {
		return err
	}
	own := map[string]string{
		"listeners.prod":  n.prodLn.Addr().String(),
		"listeners.stage": n.stageLn.Addr().String(),
		"admin.listen":    n.adminLn.Addr().String(),
	}
	ctrl, err := control.New(ctx, control.Config{
		Slots:        slotsOf(cfg, n.sup.current()),
		Active:       cfg.Active,
		Store:        n.st,
		LocalCopy:    n.st.localCopy(),
		Node:         name,
		Leading:      leading,
		Health:       healthConfig(cfg, n.upstreams, n.log, n.probe),
		Planes:       planes,
		Listeners:    [2]string{own["listeners.prod"], own["listeners.stage"]},
		Certificates: n.certificateStatus,
		AdminCertificates: func() []wire.CertificateStatus {
			if n.adminTLS == nil {
				return nil
			}
			return describeForStatus(n.adminCerts.Load())
		},
		Counts:      counts,
		Failed:      n.px.Failed,
		Shadow:      n.mirror,
		OnSlots:     n.sup.keepSlots,
		Launcher:    n.sup,
		Measure:     measureConfig(cfg),
		Analysis:    analysisConfig(cfg),
		AffinityKey: n.affinityKey,
		Plans:       plansOf(cfg),
		Routes:      routesOf(cfg),
		AllowRun:    cfg.Admin.AllowRun,
		Own:         func(addr string) string { return config.Loops(addr, own) },
		Logger:      n.log,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", n.st.where(cfg), err)
	}
	n.ctrl = ctrl
	n.onClose(ctrl.Close)
	if n.st.etcd != nil {
		rctx, stopWatching := context.WithCancel(context.Background())
		watched := make(chan struct{})
		go func() { defer close(watched); n.st.etcd.WatchRegistered(rctx, ctrl.SetRegistered) }()
		n.onClose(func() { stopWatching(); <-watched })
	}
	return nil
}

// adminServer returns the admin API's server, with the metrics.
func (n *node) adminServer(releases *release.Runner) *http.Server {
	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.NewCollector(n.px, n.ctrl, n.sup.restarts, n.version),
		metrics.NewShadowCollector(n.mirror),
		metrics.StartToReady(func() time.Duration { return time.Duration(startToReady.Load()) }),
	)
	stopping := make(chan struct{})
	srv := &http.Server{
		Handler: api.NewHandler(n.ctrl, api.Options{
			Tokens:       n.tokens,
			ProtectReads: !n.initial.AdminIsLoopback(),
			Logger:       n.log,
			Metrics:      promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelError)}),
			Rates:        n.ctrl.Rates,
			Dashboard:    dashboard.Handler(),
			Reload:       n.reload,
			Upgrade:      n.upgradeAPI(),
			Releases:     releases,
			Hosts:        n.initial.Admin.Hosts,
			// Half the admin connections at most: the rest serve
			// reads and changes while they wait.
			EventWaiters: max(adminConns(proxy.BudgetFor(descriptorLimit()))/2, 1),
			Stopping:     stopping,
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(adminErrorLog{n.log}, "", 0),
		MaxHeaderBytes:    64 << 10,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	var once sync.Once
	srv.RegisterOnShutdown(func() { once.Do(func() { close(stopping) }) })
	return srv
}

// adminErrorLog is the admin server's error log: failed TLS handshakes
// (scanners, clients that do not trust the certificate) at debug level,
// as no fault of vipswap's; anything else as a warning.
type adminErrorLog struct{ log *slog.Logger }

func (a adminErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		a.log.Debug("admin API: " + msg)
	} else {
		a.log.Warn("admin API: " + msg)
	}
	return len(p), nil
}

// descriptorLimit is how many descriptors the process may open (0:
// unknown), which bounds the admin API's connections.
var descriptorLimit = proxy.DescriptorLimit

// listen serves the prod and stage listeners and the admin API; a
// listener that fails reports to n.errc.
func (n *node) listen() {
	// The admin API gets a small share of the descriptors kept in reserve,
	// so a flood of connections to it cannot starve probes and instance
	// connections; its silent connections go after ReadHeaderTimeout.
	adminLn := netutil.LimitListener(n.adminLn, adminConns(proxy.BudgetFor(descriptorLimit())))
	if n.adminTLS != nil {
		adminLn = tls.NewListener(adminLn, n.adminTLS) // inside the limit: a handshake holds a connection
	}
	protos := func(l config.Listener) proxy.Protocols {
		return proxy.Protocols{HTTP2: l.HTTP2 && l.TLS != nil, H2C: l.H2C && l.TLS == nil}
	}
	go func() { n.errc <- n.px.ServeWith(route.Prod, n.prodLn, protos(n.initial.Listeners.Prod)) }()
	go func() { n.errc <- n.px.ServeWith(route.Stage, n.stageLn, protos(n.initial.Listeners.Stage)) }()
	go func() {
		if err := n.admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			n.errc <- err
		}
	}()
	n.log.Info("listening", "listener", "prod", "addr", n.prodLn.Addr().String())
	n.log.Info("listening", "listener", "stage", "addr", n.stageLn.Addr().String())
	n.log.Info("listening", "listener", "admin", "addr", adminLn.Addr().String())
}

// wait waits until ctx ends or a listener fails (its error), reloading
// the file on each value from hup.
func (n *node) wait(ctx context.Context, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			n.log.Info("shutting down: finishing requests in flight", "limit", n.initial.Proxy.ShutdownTimeout)
			return nil
		case <-n.upgradedC():
			return nil // a new process serves: finish the requests in flight
		case <-n.upgradeSignal():
			go n.upgradeOnSignal(ctx)
		case err := <-n.errc:
			n.log.Error("listener failed; shutting down", "err", err)
			return err
		case <-hup:
			if res, err := n.reload(ctx, wire.ChangeRequest{Actor: "SIGHUP"}); err == nil {
				n.log.Info("reloaded on SIGHUP", "history_id", res.HistoryID, "changes", len(res.Changes))
				for _, w := range res.Warnings {
					n.log.Warn("reload: " + w)
				}
			}
		}
	}
}

// shutdown stops accepting connections and waits, up to
// proxy.shutdown_timeout, for the requests in flight.
func (n *node) shutdown() {
	sctx, cancel := context.WithTimeout(context.Background(), n.initial.Proxy.ShutdownTimeout)
	defer cancel()
	stop := n.beginStopNote()
	n.stopHandover()
	// Replaced by a new process, which accepts on the same admin socket:
	// this one stops accepting admin connections at once too (an admin
	// request it took would be answered by a process that handed the
	// state over). Otherwise the admin API answers while the requests
	// in flight finish.
	adminDone := make(chan struct{})
	if n.replaced() {
		go func() { defer close(adminDone); n.admin.Shutdown(sctx) }()
	} else {
		close(adminDone)
	}
	if err := n.px.Shutdown(sctx); err != nil {
		n.log.Warn("requests still in flight at the shutdown limit", "err", err)
	}
	<-adminDone
	n.admin.Shutdown(sctx)
	n.drained()
	n.endStopNote(stop)
}
