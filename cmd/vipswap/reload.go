package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/health"
	"github.com/vipswap/vipswap/launch"
	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/wire"
)

// runtime is what a running vipswap changes when its configuration file is
// reloaded (SIGHUP, vipswap reload, POST /v1/reload): the managed
// instances of run: slots, the controller's membership and health
// settings, the proxy's options, the log. Reloads are serialised.
type runtime struct {
	path      string // the configuration file
	logs      *logSwitch
	log       *slog.Logger
	output    io.Writer
	ledger    *launch.Ledger
	px        *proxy.Proxy
	ctrl      *control.Controller
	onRefused func(*route.Instance)                             // the proxy's, kept across reloads
	probe     func(context.Context, health.Target) health.Check // HAProxy's view, when it is the health in use

	mu     sync.Mutex // serialises reloads; guards cfg
	cfg    *config.Config
	tokens *api.TokenSet // the admin API's, re-read by every reload

	gmu     sync.Mutex               // guards groups; held briefly
	groups  map[string]*launch.Group // run: slots' instances, by slot
	closing sync.WaitGroup           // groups of removed slots, stopping
}

// Launch starts a managed slot added at runtime (control.Launcher).
func (rt *runtime) Launch(slot string, run state.RunSpec, version string) error {
	rt.gmu.Lock()
	defer rt.gmu.Unlock()
	if rt.groups[slot] != nil {
		return nil
	}
	g, err := rt.startGroup(slot, configSlot(run, version))
	if err != nil {
		return err
	}
	rt.groups[slot] = g
	return nil
}

// configSlot returns a managed slot's run block as the configuration
// holds one.
func configSlot(run state.RunSpec, version string) config.Slot {
	return config.Slot{Version: version, Run: &config.Run{Command: run.Command, Address: run.Address, Replicas: run.Replicas, StopTimeout: run.StopTimeout}}
}

// Relaunch starts slot's instances anew in place of the running ones
// (control.Launcher): a deploy to a slot that takes no prod traffic.
func (rt *runtime) Relaunch(slot string, run state.RunSpec, version string) (func(keep bool), error) {
	g, err := rt.startGroup(slot, configSlot(run, version))
	if err != nil {
		return nil, err
	}
	rt.gmu.Lock()
	old := rt.groups[slot]
	rt.groups[slot] = g
	rt.gmu.Unlock()
	return func(keep bool) {
		rt.gmu.Lock()
		defer rt.gmu.Unlock()
		stop := old
		if !keep && rt.groups[slot] == g {
			rt.groups[slot], stop = old, g
		}
		if stop != nil {
			rt.closing.Go(stop.Close) // out of the routing table: SIGTERM lets them finish what they have
		}
	}, nil
}

// Replace restarts one managed instance with another command on the same
// address (control.Launcher): a rolling update.
func (rt *runtime) Replace(ctx context.Context, slot, addr string, command []string, version string) error {
	rt.gmu.Lock()
	g := rt.groups[slot]
	rt.gmu.Unlock()
	if g == nil {
		return fmt.Errorf("slot %q: no instances running", slot)
	}
	return g.Replace(ctx, addr, command, version)
}

// Addrs returns where a managed slot's instances listen (control.Launcher).
func (rt *runtime) Addrs(slot string) []string {
	rt.gmu.Lock()
	defer rt.gmu.Unlock()
	if g := rt.groups[slot]; g != nil {
		return g.Addrs()
	}
	return nil
}

// keepSlots stops, in the background, the managed instances of the slots
// not in names (removed at runtime); they finish what they have in flight.
func (rt *runtime) keepSlots(names []string) {
	rt.gmu.Lock()
	defer rt.gmu.Unlock()
	for name, g := range rt.groups {
		if !slices.Contains(names, name) {
			delete(rt.groups, name)
			rt.closing.Go(g.Close)
		}
	}
}

// startGroup starts slot name's managed instances.
func (rt *runtime) startGroup(name string, s config.Slot) (*launch.Group, error) {
	g, err := launch.Start(launch.Spec{
		Slot: name, Command: s.Run.Command, Address: s.Run.Address, Replicas: s.Run.Replicas,
		StopTimeout: s.Run.StopTimeout, Output: rt.output, Logger: rt.log, Ledger: rt.ledger, Version: s.Version,
	})
	if err != nil {
		return nil, err
	}
	rt.log.Info("started instances", "slot", name, "instances", g.Addrs())
	return g, nil
}

// slots returns cfg's membership, run: slots' addresses from groups.
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
func healthConfig(cfg *config.Config, log *slog.Logger, probe func(context.Context, health.Target) health.Check) health.Config {
	h := cfg.Health
	return health.Config{Path: h.Path, Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall, Logger: log, Probe: probe}
}

// analysisConfig returns the rollout analysis of cfg.
func analysisConfig(cfg *config.Config) state.Analysis {
	a := cfg.Analysis
	return state.Analysis{Window: a.Window, MinRequests: a.MinRequests, MaxErrorRate: a.MaxErrorRate,
		MaxP99: a.MaxP99, MaxErrorRateRatio: a.MaxErrorRateRatio, MaxP99Ratio: a.MaxP99Ratio, Paths: a.Paths}
}

// plansOf returns the named rollout plans of cfg.
// routesOf returns cfg's version routes for the routing table.
func routesOf(cfg *config.Config) []route.Route {
	var out []route.Route
	for _, r := range cfg.Routes {
		out = append(out, route.Route{PathPrefix: r.PathPrefix, Header: r.Header, Value: r.Value, Slot: r.Slot})
	}
	return out
}

func plansOf(cfg *config.Config) map[string]control.Plan {
	out := map[string]control.Plan{}
	for name, p := range cfg.Rollouts {
		var plan control.Plan
		for _, s := range p.Steps {
			pm, _ := control.PerMille(s) // validated with the configuration
			plan.Steps = append(plan.Steps, pm)
		}
		plan.Interval, plan.Pause = p.Interval, p.Pause
		for _, g := range p.Gates {
			plan.Gates = append(plan.Gates, state.Gate{HTTP: g.HTTP, Command: g.Command, Timeout: g.Timeout})
		}
		out[name] = plan
	}
	return out
}

// measureConfig returns the measurement window of cfg.
func measureConfig(cfg *config.Config) control.Measure {
	return control.Measure{Before: cfg.Measure.Before, After: cfg.Measure.After, Limit: cfg.Measure.Limit}
}

// currentGroups returns the managed instance groups.
func (rt *runtime) currentGroups() map[string]*launch.Group {
	rt.gmu.Lock()
	defer rt.gmu.Unlock()
	return maps.Clone(rt.groups)
}

// restarts returns the managed instances' restarts, by slot and address.
func (rt *runtime) restarts() map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for slot, g := range rt.currentGroups() {
		out[slot] = g.Restarts()
	}
	return out
}

// closeGroups stops every managed instance, gracefully, and waits.
func (rt *runtime) closeGroups() {
	var wg sync.WaitGroup
	for _, g := range rt.currentGroups() {
		wg.Go(g.Close)
	}
	wg.Wait()
	rt.closing.Wait()
}

// killGroups kills every managed instance at once.
func (rt *runtime) killGroups() {
	for _, g := range rt.currentGroups() {
		g.Kill()
	}
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
func (rt *runtime) reload(ctx context.Context, req wire.ChangeRequest) (wire.Change, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	next, err := config.Load(rt.path)
	if err != nil {
		return wire.Change{Operation: "reload"}, rt.ctrl.RefuseReload(ctx, req, nil,
			fmt.Errorf("the configuration in force is unchanged: %s", strings.ReplaceAll(err.Error(), "\n", "; ")))
	}
	diff := rt.cfg.Compare(next)
	if len(diff.Restart) > 0 {
		why := "these changes need a restart of vipswap: " + strings.Join(diff.Restart, "; ")
		for _, o := range rt.ctrl.RunOverrides() { // a restart would not apply those either
			if slot, _, _ := strings.Cut(strings.TrimPrefix(o, "slots."), ":"); strings.Contains(why, "slots."+slot+".") {
				why += "; but " + o + ", after a restart too: vipswap deploy or rolling changes it"
			}
		}
		return wire.Change{Operation: "reload"}, rt.ctrl.RefuseReload(ctx, req, diff.Changes,
			fmt.Errorf("the configuration in force is unchanged: %s", why))
	}
	var tokens []api.Token
	if next.Admin.TokenFile != "" {
		if tokens, err = api.LoadTokens(next.Admin.TokenFile); err != nil {
			return wire.Change{Operation: "reload"}, rt.ctrl.RefuseReload(ctx, req, diff.Changes,
				fmt.Errorf("the configuration in force is unchanged: %w", err))
		}
	}
	var affinityKey []byte
	if next.Affinity.KeyFile != "" {
		if affinityKey, err = config.LoadAffinityKey(next.Affinity.KeyFile); err != nil {
			return wire.Change{Operation: "reload"}, rt.ctrl.RefuseReload(ctx, req, diff.Changes,
				fmt.Errorf("the configuration in force is unchanged: %w", err))
		}
	}
	if !rt.tokens.Same(tokens) {
		names := make([]string, len(tokens))
		for i, t := range tokens {
			names[i] = t.Name
		}
		diff.Changes = append(diff.Changes, fmt.Sprintf("admin.token_file: tokens re-read (%s)", strings.Join(names, ", ")))
	}
	if req.DryRun {
		res, err := rt.ctrl.Reload(ctx, control.Reload{Slots: slotsOf(next, rt.currentGroups()), Routes: routesOf(next), Request: req})
		res.Changes = diff.Changes
		return res, err
	}

	// Start the new run: slots first: the controller needs their addresses.
	current := rt.currentGroups()
	started := map[string]*launch.Group{}
	groups := map[string]*launch.Group{}
	// forget stops what this reload started, if it does not go through.
	forget := func() {
		rt.gmu.Lock()
		for name := range started {
			delete(rt.groups, name)
		}
		rt.gmu.Unlock()
		for _, g := range started {
			g.Close()
		}
	}
	removed := rt.ctrl.Removed()
	for name := range rt.ctrl.Managed() { // added at runtime: the file does not list them
		if g := current[name]; g != nil {
			groups[name] = g
		}
	}
	for _, name := range next.SlotOrder {
		s := next.Slots[name]
		if s.Run == nil || slices.Contains(removed, name) {
			continue // removed at runtime: the state keeps it removed
		}
		if g := current[name]; g != nil {
			groups[name] = g
			continue
		}
		g, err := rt.startGroup(name, s)
		if err != nil {
			forget()
			return wire.Change{Operation: "reload"}, rt.ctrl.RefuseReload(ctx, req, diff.Changes,
				fmt.Errorf("the configuration in force is unchanged: slots.%s: %w", name, err))
		}
		started[name], groups[name] = g, g
		rt.gmu.Lock()
		rt.groups[name] = g // so a second signal kills it too
		rt.gmu.Unlock()
	}
	res, err := rt.ctrl.Reload(ctx, control.Reload{
		Slots: slotsOf(next, groups), Health: healthConfig(next, rt.log, rt.probe), Measure: measureConfig(next),
		Analysis: analysisConfig(next), Plans: plansOf(next), Routes: routesOf(next), AffinityKey: affinityKey,
		Changes: diff.Changes, Request: req,
	})
	if err == nil && !res.Applied {
		err = errors.New(res.Refused)
	}
	if err != nil {
		forget()
		return res, err
	}
	res.Changes = diff.Changes
	// The controller has taken removed slots out of the routing table:
	// their managed instances can stop (they finish what is in flight).
	var stopping []*launch.Group
	rt.gmu.Lock()
	for name, g := range rt.groups {
		if groups[name] == nil {
			stopping = append(stopping, g)
		}
	}
	rt.groups = groups
	rt.gmu.Unlock()
	rt.cfg = next
	rt.tokens.Set(tokens)
	rt.logs.set(next.Log)
	rt.px.Reconfigure(proxyOptions(next, rt.log, rt.onRefused))
	for _, g := range stopping {
		g.Close()
	}
	return res, nil
}

func newReloadCmd() *cobra.Command {
	var admin, reason *string
	var dryRun, force, asJSON *bool
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "make a running vipswap re-read its configuration file and apply what changed",
		Long: `The running vipswap re-reads the file it was started with (as SIGHUP does),
validates it and applies what changed without a failed request: instances
added and removed, slots added and removed (not one that takes traffic),
health, timeouts, measurement and log settings. An invalid file, a file that
changed while it was read, or a change that needs a restart (listen
addresses, the state file, the admin API, a run: slot's command), changes
nothing and says why. So does a file that would leave a slot taking prod
traffic (the active slot, one with a share of prod, one a route sends to)
without a routable instance: one that keeps none of its healthy instances
(a new address takes traffic only once its probe passes), unless --force.
Every reload is recorded in the history.`,
		Example: `  vipswap check -c vipswap.yaml && vipswap reload --reason "add 127.0.0.1:9003"
  vipswap reload --dry-run                 # what would change
  vipswap reload --force                   # even if prod is left without an instance`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n := len(*reason); n > api.MaxReason {
				return &usageError{msg: fmt.Sprintf("--reason: %d bytes, at most %d are allowed", n, api.MaxReason)}
			}
			res, err := newClient(*admin).Reload(cmd.Context(), wire.ChangeRequest{Reason: *reason, DryRun: *dryRun, Force: *force})
			if err != nil {
				return err
			}
			return printReload(cmd.OutOrStdout(), res, *asJSON)
		},
	}
	admin = adminFlag(cmd.Flags())
	reason = cmd.Flags().String("reason", "", "why, recorded in the history (at most 1 KiB)")
	dryRun = cmd.Flags().Bool("dry-run", false, "report what would change and change nothing")
	force = cmd.Flags().Bool("force", false, "apply even if a slot that takes prod traffic is left without a routable instance")
	asJSON = cmd.Flags().Bool("json", false, "print the result as JSON")
	return cmd
}

func printReload(w io.Writer, res wire.Change, asJSON bool) error {
	if asJSON {
		return writeJSON(w, res)
	}
	switch {
	case res.Refused != "":
		return fmt.Errorf("would be refused: %s", refusedWhy(res.Refused))
	case res.DryRun && len(res.Changes) == 0:
		fmt.Fprintln(w, "dry run: the file changes nothing")
	case res.DryRun:
		fmt.Fprintln(w, "dry run: the file would change:")
	case len(res.Changes) == 0:
		fmt.Fprintf(w, "reloaded: nothing changed (history entry %d)\n", res.HistoryID)
	default:
		fmt.Fprintf(w, "reloaded (revision %d, history entry %d):\n", res.Revision, res.HistoryID)
	}
	for _, c := range res.Changes {
		fmt.Fprintf(w, "  %s\n", printable(c))
	}
	for _, c := range res.Warnings {
		fmt.Fprintf(w, "warning: %s\n", printable(c))
	}
	return nil
}
