package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/rollout"
	"github.com/vipswap/vipswap/wire"
)

func newShiftCmd() *cobra.Command {
	var f *changeFlags
	var to *string
	var weight *float64
	cmd := &cobra.Command{
		Use:   "shift --to SLOT --weight PCT",
		Short: "give a slot a share of prod's new requests",
		Long: `SLOT gets PCT percent (0.1 precision) of prod's new requests, the rest stays with
the slots that had it. --weight 100 completes the shift: SLOT becomes active and
the old active slot standby (and previous, for rollback); --weight 0 sends
everything back to the active slot. Refused like a swap when SLOT has no
routable instance, unless --force. stage keeps following the standby slot.`,
		Example: `  vipswap shift --to green --weight 10
  vipswap shift --to green --weight 100 --wait   # complete it, and measure the switch
  vipswap shift --to green --weight 0            # all back`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if *to == "" || !cmd.Flags().Changed("weight") {
				return &usageError{msg: "--to and --weight are required"}
			}
			if _, err := rollout.PerMille(*weight); err != nil {
				return &usageError{msg: "--" + err.Error()}
			}
			c := newClient(*f.admin)
			res, err := c.Shift(cmd.Context(), wire.ShiftRequest{ChangeRequest: f.request(), To: *to, Weight: weight})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if res.DryRun {
				return printDryRun(out, res, *f.asJSON)
			}
			if *f.asJSON && !*f.wait {
				return writeJSON(out, res)
			}
			if !*f.asJSON {
				printShift(out, res)
			}
			if !*f.wait || !res.Applied {
				return nil
			}
			e, err := waitMeasured(cmd.Context(), c, res, *f.timeout, cmd.ErrOrStderr())
			if err != nil {
				return applied(res, err)
			}
			if *f.asJSON {
				return writeJSON(out, e)
			}
			fmt.Fprintf(out, "shifted: %s\n", describeMeasurement(e.Measurement))
			return nil
		},
	}
	f = changeFlagsOf(cmd.Flags(), "return once the traffic around the shift is measured, and print it")
	to = cmd.Flags().String("to", "", "the slot to give traffic to")
	weight = cmd.Flags().Float64("weight", 0, "its share of prod, in percent (0 to 100, one decimal)")
	return cmd
}

// printShift says what prod's split is after a change.
func printShift(w io.Writer, res wire.Change) {
	if !res.Applied {
		fmt.Fprintf(w, "nothing to do: prod is already %s (revision %d)\n", split(res.Weights), res.Revision)
		return
	}
	note := ""
	if res.Forced {
		note = " (forced: it had no routable instance)"
	}
	fmt.Fprintf(w, "%s: prod is %s (revision %d)%s\n", res.Operation, split(res.Weights), res.Revision, note)
	printWarnings(w, res)
}

// split formats weights in percent, largest first: "blue 80%, green 20%".
func split(w map[string]float64) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range w {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(a, b int) bool { return all[a].v > all[b].v || (all[a].v == all[b].v && all[a].k < all[b].k) })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s %s%%", e.k, strconv.FormatFloat(e.v, 'f', -1, 64)))
	}
	return strings.Join(parts, ", ")
}

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout start|status",
		Short: "shift prod to a slot step by step, judged live, rolled back on errors",
		Long: `A rollout moves prod to a slot in steps (10%, 25%, 50%, 100% ...), each lasting an
interval, or pausing until "vipswap promote". Over a sliding window it compares
the canary's error rate and p99 latency with bounds (analysis: in the
configuration) and with the stable slot; a breach aborts at once and sends
everything back. The plan lives in the state: a restarted vipswap goes on at
the same step.`,
	}
	cmd.AddCommand(newRolloutStartCmd(), newRolloutStatusCmd())
	return cmd
}

func newRolloutStartCmd() *cobra.Command {
	var f *changeFlags
	var to, steps, interval, plan *string
	var pause, skipShadow *bool
	cmd := &cobra.Command{
		Use:   "start --to SLOT (--steps 10,25,50,100 [--interval 1m] [--pause] | --plan NAME [--skip-shadow])",
		Short: "start a rollout",
		Example: `  vipswap rollout start --to green --steps 10,25,50,100 --interval 1m
  vipswap rollout start --to green --steps 5,50,100 --pause    # promote each step by hand
  vipswap rollout start --to green --plan careful              # rollouts.careful in the configuration`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if *to == "" {
				return &usageError{msg: "--to is required"}
			}
			req := wire.RolloutRequest{ChangeRequest: f.request(), To: *to, Plan: *plan, Interval: *interval, SkipShadow: *skipShadow}
			if cmd.Flags().Changed("pause") {
				req.Pause = pause
			}
			if *steps != "" {
				for _, s := range strings.Split(*steps, ",") {
					v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
					if _, perr := rollout.PerMille(v); err == nil && perr != nil {
						return &usageError{msg: "--steps: " + perr.Error()}
					}
					if err != nil {
						return &usageError{msg: fmt.Sprintf("--steps: %q is not a percentage (want e.g. 10,25,50,100)", s)}
					}
					req.Steps = append(req.Steps, v)
				}
			}
			if *interval != "" {
				if d, err := time.ParseDuration(*interval); err != nil || d <= 0 {
					return &usageError{msg: fmt.Sprintf("--interval: want a duration above zero such as 1m, got %q", *interval)}
				}
			}
			if len(req.Steps) == 0 && *plan == "" {
				return &usageError{msg: "--steps or --plan is required"}
			}
			res, err := newClient(*f.admin).StartRollout(cmd.Context(), req)
			if err != nil {
				return err
			}
			if res.DryRun {
				return printDryRun(cmd.OutOrStdout(), res, *f.asJSON)
			}
			if *f.asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			printShift(cmd.OutOrStdout(), res)
			fmt.Fprintln(cmd.OutOrStdout(), "follow it with: vipswap rollout status --watch")
			return nil
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	to = cmd.Flags().String("to", "", "the slot to roll out to")
	steps = cmd.Flags().String("steps", "", "the canary's weights in percent, comma-separated, ending at 100")
	interval = cmd.Flags().String("interval", "", "how long each step lasts (default 1m, or the plan's)")
	pause = cmd.Flags().Bool("pause", false, "wait for vipswap promote after each step but the last")
	skipShadow = cmd.Flags().Bool("skip-shadow", false, "start a plan that has a shadow gate without running it (only vipswap deploy runs the gate; without this flag such a start is refused)")
	plan = cmd.Flags().String("plan", "", "a plan under rollouts: in the configuration")
	return cmd
}

func newRolloutStatusCmd() *cobra.Command {
	var admin *string
	var asJSON, watch *bool
	cmd := &cobra.Command{
		Use:     "status [--json | --watch]",
		Short:   "the running rollout: step, progress, time left, the live analysis",
		Example: "  vipswap rollout status --watch",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := newClient(*admin)
			if !*watch {
				st, err := c.Rollout(cmd.Context())
				if err != nil {
					return err
				}
				if *asJSON {
					return writeJSON(cmd.OutOrStdout(), st)
				}
				printRollout(cmd.OutOrStdout(), st)
				return nil
			}
			if *asJSON {
				return &usageError{msg: "--watch and --json do not go together"}
			}
			return watchRollout(cmd.Context(), c, cmd.OutOrStdout())
		},
	}
	admin = adminFlag(cmd.Flags())
	asJSON = cmd.Flags().Bool("json", false, "print it as JSON")
	watch = cmd.Flags().Bool("watch", false, "redraw it every second until interrupted")
	return cmd
}

func watchRollout(ctx context.Context, c *client.Client, w io.Writer) error {
	return redraw(ctx, w, func(ctx context.Context) (func(io.Writer), error) {
		st, err := c.Rollout(ctx)
		return func(w io.Writer) { printRollout(w, st) }, err
	})
}

// redraw fetches what to show every second and prints it, on a cleared
// screen when w is a terminal, until interrupted (SIGINT, SIGTERM: a
// clean end) or a fetch fails.
func redraw(ctx context.Context, w io.Writer, fetch func(context.Context) (func(io.Writer), error)) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	live := isTerminal(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		show, err := fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if live {
			fmt.Fprint(w, "\033[H\033[2J")
		}
		show(w)
		fmt.Fprintf(w, "(%s, every second; Ctrl-C stops)\n\n", time.Now().Format("15:04:05"))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// printRollout draws the rollout: a progress bar over its steps, the
// current step and time left, and the analysis.
func printRollout(w io.Writer, st wire.RolloutStatus) {
	if !st.Running {
		fmt.Fprintf(w, "no rollout is running; prod is %s\n", split(st.Weights))
		return
	}
	var steps []string
	for i, s := range st.Steps {
		mark := strconv.FormatFloat(s, 'f', -1, 64) + "%"
		if i == st.Step {
			mark = "[" + mark + "]"
		}
		steps = append(steps, mark)
	}
	cur := st.Steps[st.Step]
	const width = 40
	filled := int(cur / 100 * width)
	fmt.Fprintf(w, "rollout %s → %s: %s\n", st.From, st.To, strings.Join(steps, " → "))
	fmt.Fprintf(w, "  [%s%s] %s%% of prod on %s\n", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		strconv.FormatFloat(cur, 'f', -1, 64), st.To)
	state := fmt.Sprintf("step %d of %d, %.0f s left", st.Step+1, len(st.Steps), st.LeftSeconds)
	switch {
	case st.Paused:
		state = fmt.Sprintf("step %d of %d, paused: vipswap promote goes on", st.Step+1, len(st.Steps))
	case st.LeftSeconds == 0:
		state = fmt.Sprintf("step %d of %d done, waiting for the analysis to have enough requests", st.Step+1, len(st.Steps))
	}
	if st.PausesAfter {
		state += ", then for vipswap promote"
	}
	fmt.Fprintf(w, "  %s\n", state)
	if a := st.Analysis; a != nil {
		fmt.Fprintf(w, "  analysis over %.0f s: %s\n", a.WindowSeconds, printable(a.Verdict))
		for _, r := range []struct {
			role, slot string
			f          wire.SlotFigures
		}{{"canary", st.To, a.Canary}, {"stable", st.From, a.Stable}} {
			p99 := "–" // no request, no latency
			if r.f.Requests > 0 {
				p99 = strconv.FormatFloat(r.f.P99MS, 'f', 1, 64) + " ms"
			}
			fmt.Fprintf(w, "    %s %-10s %7s requests, %6.2f%% errors, p99 %s", r.role, r.slot, thousands(r.f.Requests), r.f.ErrorRate*100, p99)
			if r.f.SteeredRequests > 0 {
				fmt.Fprintf(w, "; not judged: %s steered by a pin or a route (%s errors)", thousands(r.f.SteeredRequests), thousands(r.f.SteeredErrors))
			}
			fmt.Fprintln(w)
			if r.role != "canary" {
				continue
			}
			for _, p := range r.f.Paths {
				fmt.Fprintf(w, "      %-17s %7s requests, %6.2f%% errors\n", printable(p.Prefix), thousands(p.Requests), p.ErrorRate*100)
			}
		}
	}
}

func newPromoteCmd() *cobra.Command {
	var f *changeFlags
	var full *bool
	cmd := &cobra.Command{
		Use:     "promote [--full]",
		Short:   "continue a paused rollout, or complete it at once with --full",
		Example: "  vipswap promote\n  vipswap promote --full --reason \"looks good\"",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := newClient(*f.admin).Promote(cmd.Context(), wire.PromoteRequest{ChangeRequest: f.request(), Full: *full})
			if err != nil {
				return err
			}
			return reportChange(cmd.OutOrStdout(), res, *f.asJSON, printShift)
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	full = cmd.Flags().Bool("full", false, "go to 100% now and end the rollout")
	return cmd
}

func newAbortCmd() *cobra.Command {
	var f *changeFlags
	cmd := &cobra.Command{
		Use:     "abort [--reason R]",
		Short:   "send all of prod back to the stable (active) slot at once and end the rollout",
		Example: "  vipswap abort --reason \"errors in checkout\"",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := newClient(*f.admin).Abort(cmd.Context(), f.request())
			if err != nil {
				return err
			}
			return reportChange(cmd.OutOrStdout(), res, *f.asJSON, printShift)
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	return cmd
}

// reportChange prints a change's answer: a dry run's verdict, the JSON, or
// text's one line.
func reportChange(w io.Writer, res wire.Change, asJSON bool, text func(io.Writer, wire.Change)) error {
	if res.DryRun {
		return printDryRun(w, res, asJSON)
	}
	if asJSON {
		return writeJSON(w, res)
	}
	text(w, res)
	return nil
}
