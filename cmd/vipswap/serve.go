package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/dashboard"
	"github.com/vipswap/vipswap/launch"
	"github.com/vipswap/vipswap/metrics"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/release"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
	"golang.org/x/net/netutil"
)

func newServeCmd() *cobra.Command {
	var path *string
	cmd := &cobra.Command{
		Use:   "serve [-c vipswap.yaml]",
		Short: "run the switch: listeners, health checks, admin API, managed instances",
		Long: `Runs vipswap on a configuration file (docs/configuration.md). SIGHUP reloads the
file; SIGTERM or Ctrl-C stops it gracefully (requests in flight finish,
managed instances stop); a second one stops it at once.`,
		Example: `  vipswap serve -c examples/quickstart.yaml
  vipswap check -c vipswap.yaml && vipswap serve -c vipswap.yaml`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return serveFile(cmd.Context(), *path, cmd.ErrOrStderr())
		},
	}
	path = cmd.Flags().StringP("config", "c", "vipswap.yaml", "configuration file")
	return cmd
}

// serveFile runs the switch on the configuration at path until a signal.
func serveFile(ctx context.Context, path string, stderr io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	logs, log := newLogSwitch(cfg.Log, stderr)
	if os.Getenv("GOGC") == "" {
		// The heap is small and mostly per-request garbage: collecting at
		// 400% instead of 100% growth costs a few MiB and gains about 4%
		// throughput (docs/performance.md). GOGC overrides it.
		debug.SetGCPercent(400)
	}
	// A switch must outlive a closed log pipe: a write to it then fails
	// instead of killing the process.
	signal.Ignore(syscall.SIGPIPE)
	// The first SIGINT or SIGTERM stops vipswap gracefully; a second one
	// stops it at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	force := make(chan struct{})
	done := make(chan struct{})
	var watch sync.WaitGroup
	defer watch.Wait()
	defer close(done)
	watch.Go(func() {
		select {
		case sig := <-sigs:
			log.Info("stopping: "+sig.String()+" received; another one stops at once", "signal", sig.String())
			stop()
		case <-done:
			return
		}
		select {
		case <-sigs:
			close(force)
		case <-done:
		}
	})
	// SIGHUP reloads the configuration file.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return serve(ctx, serveSetup{path: path, cfg: cfg, logs: logs, log: log, output: stderr, force: force, hup: hup})
}

// serveSetup is what serve runs with.
type serveSetup struct {
	path   string // the configuration file, for reloads
	cfg    *config.Config
	logs   *logSwitch
	log    *slog.Logger
	output io.Writer     // managed instances' output
	force  chan struct{} // closed by a second signal
	hup    <-chan os.Signal
}

// serve runs the switch until ctx ends, then shuts down in order: stop
// accepting and finish in-flight requests, stop the controller, stop managed
// instances, close the store. Everything opened is closed on every path.
// When force is closed (a second signal), it kills the managed instances
// and exits the process at once.
func serve(ctx context.Context, setup serveSetup) (err error) {
	cfg, log, force := setup.cfg, setup.log, setup.force
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	// A second signal stops vipswap at once, from the very start (a token
	// file that blocks, a leftover instance that ignores SIGTERM) until
	// everything else has stopped: this cleanup runs last.
	log.Debug("starting", "config", setup.path, "version", version()) // debug: a refusal to start stays one line
	var running atomic.Pointer[runtime]
	forced := make(chan struct{})
	cleanups = append(cleanups, func() { close(forced) })
	go func() {
		select {
		case <-force:
			log.Error("second signal: stopping at once; requests in flight are cut off")
			if rt := running.Load(); rt != nil {
				rt.killGroups()
			}
			os.Exit(exitFailed)
		case <-forced:
		}
	}()

	var tokens []api.Token
	if cfg.Admin.TokenFile != "" {
		if tokens, err = api.LoadTokens(cfg.Admin.TokenFile); err != nil {
			return err
		}
	}
	var affinityKey []byte
	if cfg.Affinity.KeyFile != "" {
		if affinityKey, err = config.LoadAffinityKey(cfg.Affinity.KeyFile); err != nil {
			return err
		}
	}

	// Bind every address before starting anything, so a taken port fails
	// fast and leaves nothing behind.
	bind := func(name, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
		}
		cleanups = append(cleanups, func() { ln.Close() })
		return ln, nil
	}
	prodLn, err := bind("listeners.prod", cfg.Listeners.Prod)
	if err != nil {
		return err
	}
	stageLn, err := bind("listeners.stage", cfg.Listeners.Stage)
	if err != nil {
		return err
	}
	adminLn, err := bind("admin.listen", cfg.Admin.Listen)
	if err != nil {
		return err
	}

	st, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { st.Close() })

	// With the state file locked, no other vipswap uses its ledger: stop
	// what a previous run that was killed left running. (With etcd, each
	// node has its own local copy, and the ledger beside it.)
	ledger, err := launch.OpenLedger(cfg.State.LocalBase()+".instances", log)
	if err != nil {
		return err
	}
	if _, err := ledger.Reclaim(maxStopTimeout(cfg)); err != nil {
		log.Warn("could not look for instances a previous run left running", "err", err)
	}
	cleanups = append(cleanups, func() { ledger.Close() })
	if ctx.Err() != nil {
		return nil // stopped while starting: nothing is running yet
	}

	rt := &runtime{path: setup.path, cfg: cfg, logs: setup.logs, log: log, output: setup.output, ledger: ledger,
		groups: map[string]*launch.Group{}, tokens: api.NewTokenSet(tokens)}
	running.Store(rt)
	cleanups = append(cleanups, rt.closeGroups)
	var removed []string // slots removed at runtime: their instances are not started
	stored := st.lastState(ctx)
	removed = stored.Removed
	for _, name := range slices.Sorted(maps.Keys(stored.Slots)) { // managed slots added at runtime
		if run := stored.Slots[name].Run; run != nil {
			if err := rt.Launch(name, *run, stored.Slots[name].Version); err != nil {
				return fmt.Errorf("slot %s (added at runtime): %w", name, err)
			}
		}
	}
	for _, name := range cfg.SlotOrder {
		if s := cfg.Slots[name]; s.Run != nil && !slices.Contains(removed, name) && stored.Slots[name].Run == nil { // a deploy's run block replaces the file's
			g, err := rt.startGroup(name, s)
			if err != nil {
				return err
			}
			rt.gmu.Lock()
			rt.groups[name] = g // under gmu: a second signal may kill them meanwhile
			rt.gmu.Unlock()
		}
	}
	node, leading := nodeName(adminLn.Addr().String()), func() bool { return true }
	if st.etcd != nil {
		lctx, stopLeading := context.WithCancel(context.Background())
		l := st.etcd.Lead(lctx, "rollouts", node, func(on bool) {
			if on {
				log.Info("this node drives rollouts now", "node", node)
			}
		})
		leading = l.Leading
		cleanups = append(cleanups, func() { stopLeading(); <-l.Done() })
	}
	var ctrl *control.Controller
	rt.onRefused = func(i *route.Instance) { ctrl.InstanceRefused(i) }
	px := proxy.New(proxyOptions(cfg, log, rt.onRefused))
	planes := []control.DataPlane{px}
	counts := px.Counters
	if cfg.HAProxy != nil {
		hx := newHAProxyPlane(cfg.HAProxy, log)
		cleanups = append(cleanups, hx.Close)
		planes = append(planes, hx)
		counts = func(l route.Listener) map[string]route.Counts {
			return route.SumCounts(px.Counters(l), hx.Counts(l))
		}
		if cfg.HAProxy.Health == "haproxy" {
			rt.probe = hx.Probe
		}
	}
	ctrl, err = control.New(ctx, control.Config{
		Slots:       slotsOf(cfg, rt.groups),
		Active:      cfg.Active,
		Store:       st,
		LocalCopy:   st.localCopy(),
		Node:        node,
		Leading:     leading,
		Health:      healthConfig(cfg, log, rt.probe),
		Planes:      planes,
		Listeners:   [2]string{prodLn.Addr().String(), stageLn.Addr().String()},
		Counts:      counts,
		Failed:      px.Failed,
		OnSlots:     rt.keepSlots,
		Launcher:    rt,
		Measure:     measureConfig(cfg),
		Analysis:    analysisConfig(cfg),
		AffinityKey: affinityKey,
		Plans:       plansOf(cfg),
		Routes:      routesOf(cfg),
		AllowRun:    cfg.Admin.AllowRun,
		Own: func(addr string) string {
			return config.Loops(addr, map[string]string{
				"listeners.prod":  prodLn.Addr().String(),
				"listeners.stage": stageLn.Addr().String(),
				"admin.listen":    adminLn.Addr().String(),
			})
		},
		Logger: log,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", st.where(cfg), err)
	}
	cleanups = append(cleanups, ctrl.Close)
	if st.etcd != nil {
		rctx, stopWatching := context.WithCancel(context.Background())
		watched := make(chan struct{})
		go func() { defer close(watched); st.etcd.WatchRegistered(rctx, ctrl.SetRegistered) }()
		cleanups = append(cleanups, func() { stopWatching(); <-watched })
	}
	rt.px, rt.ctrl = px, ctrl
	for _, o := range ctrl.RunOverrides() {
		log.Warn(o + ": vipswap deploy or rolling changes it")
	}
	releases := release.New(release.Config{Controller: ctrl, Logger: log, AllowRun: func() bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		return rt.cfg.Admin.AllowRun
	}})
	cleanups = append(cleanups, releases.Close) // before the controller closes

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.NewCollector(px, ctrl, rt.restarts, version()),
	)

	admin := &http.Server{
		Handler: api.NewHandler(ctrl, api.Options{
			Tokens:       rt.tokens,
			ProtectReads: !cfg.AdminIsLoopback(),
			Logger:       log,
			Metrics:      promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}),
			Rates:        ctrl.Rates,
			Dashboard:    dashboard.Handler(),
			Reload:       rt.reload,
			Releases:     releases,
			Hosts:        cfg.Admin.Hosts,
		}),
		ReadHeaderTimeout: 5 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	// The admin API gets a small share of the descriptors kept in reserve,
	// so a flood of connections to it cannot starve probes and instance
	// connections; its silent connections go after ReadHeaderTimeout.
	adminLn = netutil.LimitListener(adminLn, adminConns(proxy.BudgetFor(proxy.DescriptorLimit())))
	errc := make(chan error, 3)
	go func() { errc <- px.Serve(route.Prod, prodLn) }()
	go func() { errc <- px.Serve(route.Stage, stageLn) }()
	go func() {
		if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	log.Info("listening", "listener", "prod", "addr", prodLn.Addr().String())
	log.Info("listening", "listener", "stage", "addr", stageLn.Addr().String())
	log.Info("listening", "listener", "admin", "addr", adminLn.Addr().String())

wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: finishing requests in flight", "limit", cfg.Proxy.ShutdownTimeout)
			break wait
		case err = <-errc:
			log.Error("listener failed; shutting down", "err", err)
			break wait
		case <-setup.hup:
			if res, err := rt.reload(ctx, wire.ChangeRequest{Actor: "SIGHUP"}); err == nil {
				log.Info("reloaded on SIGHUP", "history_id", res.HistoryID, "changes", len(res.Changes))
				for _, w := range res.Warnings {
					log.Warn("reload: " + w)
				}
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.ShutdownTimeout)
	defer cancel()
	if serr := px.Shutdown(sctx); serr != nil {
		log.Warn("requests still in flight at the shutdown limit", "err", serr)
	}
	admin.Shutdown(sctx)
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// proxyOptions returns the data plane's options from the configuration,
// with the connection limits shared out of the descriptors vipswap may
// open unless the configuration sets them.
func proxyOptions(cfg *config.Config, log *slog.Logger, onRefused func(*route.Instance)) proxy.Options {
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
		OnRefused:             onRefused,
		AccessLog:             accessLog(cfg.Log, log),
		Logger:                log,
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
