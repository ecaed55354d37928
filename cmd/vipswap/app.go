package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/slotapp"
)

// maxPad bounds /api/test?size=, which pads the answer with that many
// bytes of white space (to try slow readers and large answers).
const maxPad = 64 << 20

// spaces is what /api/test?size= pads with.
var spaces = []byte(strings.Repeat(" ", 32<<10))

// maxDelay bounds /api/test?delay= so a typo cannot hold a connection for
// days.
const maxDelay = 5 * time.Minute

func newAppCmd() *cobra.Command {
	var listen, slot, version *string
	var failRate *float64
	var failPaths *[]string
	var unhealthy *bool
	var differEvery *int
	var stopDelay *time.Duration
	cmd := &cobra.Command{
		Use:   "app --listen ADDR --slot NAME [--version V]",
		Short: "the sample application, which speaks the slot-aware probe contract",
		Long: `A small application to try vipswap with: GET /api/ping?slot=X answers 200 when X
is its own slot and 404 otherwise; GET /api/test answers {"slot", "version",
"instance"} (?delay=2s holds the answer, ?size=N pads it with N bytes of white
space); --fail-rate and --fail-path answer some requests 500, --unhealthy every
probe 503 (so does a --version ending in -unhealthy: vipswap deploy --version
2.1-unhealthy tries a release that never becomes healthy). On SIGTERM it stops taking
connections, answers 503 on open ones, finishes what is in flight, exits 0;
--stop-delay D keeps it serving as usual for D first, as applications behind a
load balancer often do (and probes keep passing meanwhile).`,
		Example: `  vipswap app --listen 127.0.0.1:9001 --slot blue --version 1.0`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if *listen == "" || *slot == "" {
				return &usageError{msg: "--listen and --slot are required"}
			}
			if *failRate < 0 || *failRate > 1 {
				return &usageError{msg: fmt.Sprintf("--fail-rate: want a fraction from 0 to 1, got %g", *failRate)}
			}
			for _, p := range *failPaths {
				if !strings.HasPrefix(p, "/") {
					return &usageError{msg: fmt.Sprintf("--fail-path: want a path prefix starting with /, got %q", p)}
				}
			}
			if *stopDelay < 0 || *stopDelay > maxDelay {
				return &usageError{msg: fmt.Sprintf("--stop-delay: want a duration up to %s, got %s", maxDelay, *stopDelay)}
			}
			// A version named so is one that never becomes healthy: a
			// deploy of a run: block's command can try a failed release.
			sick := *unhealthy || strings.HasSuffix(*version, "-unhealthy")
			if *differEvery < 0 {
				return &usageError{msg: fmt.Sprintf("--differ-every: want a count of requests (0 for never), got %d", *differEvery)}
			}
			faults := appFaults{rate: *failRate, paths: *failPaths, unhealthy: sick, differEvery: int64(*differEvery), answered: new(atomic.Int64)}
			return runApp(cmd.Context(), *listen, *slot, *version, faults, *stopDelay, cmd.ErrOrStderr())
		},
	}
	listen = cmd.Flags().String("listen", "", "address to listen on, host:port (required)")
	slot = cmd.Flags().String("slot", "", "the slot this instance belongs to (required)")
	version = cmd.Flags().String("version", "dev", "version to report")
	failRate = cmd.Flags().Float64("fail-rate", 0, "answer this fraction of requests (but probes) with a 500, to try rollbacks (0.1 is 10%)")
	unhealthy = cmd.Flags().Bool("unhealthy", false, "fail every health probe (503): a version that never becomes healthy, to try a failed deploy (a --version ending in -unhealthy does the same)")
	failPaths = cmd.Flags().StringArray("fail-path", nil, "answer every request under this path prefix with a 500 (repeatable), to try an analysis that judges paths")
	differEvery = cmd.Flags().Int("differ-every", 0, "add the field \"differ\": true to every Nth answer of /api/, to try vipswap shadow's comparison (50 is 2%)")
	stopDelay = cmd.Flags().Duration("stop-delay", 0, "on SIGTERM, go on serving as usual this long before stopping")
	return cmd
}

// appFaults are the failures the sample app makes on purpose, to try
// rollbacks.
type appFaults struct {
	rate      float64  // answer this fraction of requests with a 500
	paths     []string // answer every request under these prefixes with a 500
	unhealthy bool     // answer every probe 503
	// differEvery, when above 0, makes every differEvery-th answer of
	// /api/ carry one more field, "differ": true (a version that answers
	// differently, for vipswap shadow).
	differEvery int64
	answered    *atomic.Int64 // answers of /api/ so far
}

// differs reports whether the next answer is one that differs on purpose.
func (f appFaults) differs() bool {
	return f.differEvery > 0 && f.answered.Add(1)%f.differEvery == 0
}

// fails reports whether the request for path fails on purpose.
func (f appFaults) fails(path string) bool {
	for _, p := range f.paths {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return f.rate > 0 && rand.Float64() < f.rate
}

func runApp(ctx context.Context, listen, slot, version string, faults appFaults, stopDelay time.Duration, stderr io.Writer) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	fmt.Fprintf(stderr, "app slot=%s version=%s listening on %s\n", slot, version, addr)
	signalled, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	serving, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	go func() {
		<-signalled.Done()
		if stopDelay > 0 && ctx.Err() == nil {
			fmt.Fprintf(stderr, "app slot=%s stopping in %s\n", slot, stopDelay)
			t := time.NewTimer(stopDelay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		stopServing()
	}()
	err = slotapp.Serve(serving, ln, sampleApp(slot, version, addr, faults, stderr))
	fmt.Fprintf(stderr, "app slot=%s stopped\n", slot)
	return err
}

// sampleApp is the sample application: the probe contract plus /api/test.
// Requests that ask for a delay are logged to log, so a drain can be watched.
func sampleApp(slot, version, instance string, faults appFaults, log io.Writer) http.Handler {
	mux := http.NewServeMux()
	ping := slotapp.Ping(slot)
	if faults.unhealthy {
		ping = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "unhealthy on purpose (--unhealthy)", http.StatusServiceUnavailable)
		})
	}
	mux.Handle("GET /api/ping", ping)
	// Every path under /api/ answers the same: which slot, version and
	// instance served it (version routes such as /api/2.0/ reach it too).
	// Other paths are 404.
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		if d := r.URL.Query().Get("delay"); d != "" {
			delay, err := time.ParseDuration(d)
			if err != nil || delay < 0 || delay > maxDelay {
				http.Error(w, fmt.Sprintf("delay: want a duration up to %s, got %q", maxDelay, d), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(log, "app slot=%s holding a request for %s\n", slot, delay)
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		pad := 0
		if s := r.URL.Query().Get("size"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > maxPad {
				http.Error(w, fmt.Sprintf("size: want a number of bytes up to %d, got %q", maxPad, s), http.StatusBadRequest)
				return
			}
			pad = n
		}
		w.Header().Set("Content-Type", "application/json")
		if faults.fails(r.URL.Path) {
			w.WriteHeader(http.StatusInternalServerError) // a broken release, on purpose
		}
		answer := map[string]any{"slot": slot, "version": version, "instance": instance}
		if faults.differs() {
			answer["differ"] = true
		}
		json.NewEncoder(w).Encode(answer)
		for pad > 0 { // white space after the JSON: a large answer that still parses
			n := min(pad, len(spaces))
			if _, err := w.Write(spaces[:n]); err != nil {
				return
			}
			pad -= n
		}
	})
	return mux
}
