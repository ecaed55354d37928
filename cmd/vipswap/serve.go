package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
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
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
)

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	path := fs.String("c", "vipswap.yaml", "configuration file")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
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
		case <-sigs:
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
	return serve(ctx, cfg, log, stderr, force)
}

// serve runs the switch until ctx ends, then shuts down in order: stop
// accepting and finish in-flight requests, stop the controller, stop managed
// instances, close the store. Everything opened is closed on every path.
// When force is closed (a second signal), it kills the managed instances
// and exits the process at once.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, output io.Writer, force <-chan struct{}) (err error) {
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	var tokens []api.Token
	if cfg.Admin.TokenFile != "" {
		if tokens, err = api.LoadTokens(cfg.Admin.TokenFile); err != nil {
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

	st, err := bolt.OpenWith(cfg.State.Path, bolt.Options{Retention: store.Retention{
		MaxEntries: cfg.State.History.MaxEntries, MaxAge: cfg.State.History.MaxAge,
	}})
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { st.Close() })
	if st.Created() {
		log.Warn("new state: the state file holds no state yet, so it is seeded from the configuration's active slot",
			"path", cfg.State.Path, "active", cfg.Active)
	}

	// With the state file locked, no other vipswap uses its ledger: stop
	// what a previous run that was killed left running.
	ledger, err := launch.OpenLedger(cfg.State.Path+".instances", log)
	if err != nil {
		return err
	}
	if _, err := ledger.Reclaim(maxStopTimeout(cfg)); err != nil {
		log.Warn("could not look for instances a previous run left running", "err", err)
	}
	cleanups = append(cleanups, func() { ledger.Close() })
	// A second signal is heeded until everything else has stopped.
	forced := make(chan struct{})
	cleanups = append(cleanups, func() { close(forced) })

	var slots []control.Slot
	var groups []*launch.Group
	for _, name := range cfg.SlotOrder {
		s := cfg.Slots[name]
		addrs := s.Instances
		if s.Run != nil {
			g, err := launch.Start(launch.Spec{
				Slot: name, Command: s.Run.Command, Address: s.Run.Address, Replicas: s.Run.Replicas,
				StopTimeout: s.Run.StopTimeout, Output: output, Logger: log, Ledger: ledger,
			})
			if err != nil {
				return err
			}
			cleanups = append(cleanups, g.Close)
			groups = append(groups, g)
			addrs = g.Addrs()
			log.Info("started instances", "slot", name, "instances", addrs)
		}
		slots = append(slots, control.Slot{Name: name, Addrs: addrs})
	}
	go func() {
		select {
		case <-force:
			log.Error("second signal: stopping at once; requests in flight are cut off")
			for _, g := range groups {
				g.Kill()
			}
			os.Exit(exitFailed)
		case <-forced:
		}
	}()

	var ctrl *control.Controller
	px := proxy.New(proxyOptions(cfg, log, func(i *route.Instance) { ctrl.InstanceRefused(i) }))
	ctrl, err = control.New(ctx, control.Config{
		Slots:  slots,
		Active: cfg.Active,
		Store:  st,
		Health: health.Config{
			Path: cfg.Health.Path, Interval: cfg.Health.Interval, Timeout: cfg.Health.Timeout,
			Rise: cfg.Health.Rise, Fall: cfg.Health.Fall, Logger: log,
		},
		Planes:    []control.DataPlane{px},
		Listeners: [2]string{prodLn.Addr().String(), stageLn.Addr().String()},
		Counts:    px.Counters,
		Measure:   control.Measure{Before: cfg.Measure.Before, After: cfg.Measure.After, Limit: cfg.Measure.Limit},
		Logger:    log,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.State.Path, err)
	}
	cleanups = append(cleanups, ctrl.Close)

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.NewCollector(px, ctrl),
	)

	admin := &http.Server{
		Handler: api.NewHandler(ctrl, api.Options{
			Tokens:       tokens,
			ProtectReads: !cfg.AdminIsLoopback(),
			Logger:       log,
			Metrics:      promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}),
			Rates:        ctrl.Rates,
			Dashboard:    dashboard.Handler(),
			Hosts:        cfg.Admin.Hosts,
		}),
		ReadHeaderTimeout: 5 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
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

	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing requests in flight", "limit", cfg.Proxy.ShutdownTimeout)
	case err = <-errc:
		log.Error("listener failed; shutting down", "err", err)
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
	if budget.Descriptors > 0 {
		log.Info("connection limits", "descriptors", budget.Descriptors, "max_connections_per_listener", maxConns,
			"max_idle_instance_connections", budget.MaxIdleConns, "reserved", budget.Reserve)
		if 2*maxConns > budget.Descriptors-budget.Reserve {
			log.Warn("proxy.max_connections leaves too few descriptors for the instance connections; raise LimitNOFILE (ulimit -n) or lower it",
				"max_connections", maxConns, "descriptors", budget.Descriptors)
		}
	}
	return proxy.Options{
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
		MaxIdleConns:          budget.MaxIdleConns,
		MaxHeaderBytes:        p.MaxHeaderBytes,
		MaxHeaderFields:       p.MaxHeaderFields,
		OnRefused:             onRefused,
		AccessLog:             accessLog(cfg.Log, log),
		Logger:                log,
	}
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

// newLogger returns vipswap's logger as the configuration says.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	level, _ := c.SlogLevel() // validated with the configuration
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// accessLog returns the proxy's access log, or nil when it is off.
func accessLog(c config.Log, log *slog.Logger) *proxy.AccessLog {
	if !c.Access {
		return nil
	}
	return &proxy.AccessLog{Logger: log.With("log", "access"), Sample: c.AccessSample}
}
