package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/wire"
)

func newDeployCmd() *cobra.Command {
	var req wire.DeployRequest
	var f *releaseFlags
	var shadow wire.ShadowGate
	var maxErrorRate float64
	cmd := &cobra.Command{
		Use:   "deploy --slot SLOT --version V [flags] [-- COMMAND...]",
		Short: "release a new version: start it, check it, switch prod to it, keep the old one",
		Long: `Starts the new version in SLOT (the standby, an idle slot, or a new slot), waits
until every instance is healthy, warms them up (--warmup), points stage at SLOT
and runs the gates against it (--shadow D copies prod's requests to SLOT for D and
compares the answers within bounds; --check PATH answers 2xx, --gate COMMAND
exits 0), then switches prod: one atomic swap (--strategy swap) or a rollout judged by the
analysis (--strategy rollout with --plan or --steps). It waits until the old
slot has no request in flight. The old slot keeps running for --keep, so that
"vipswap rollback" is instant; then a slot added at runtime is removed (a
configured one stays, as the standby).

COMMAND runs each instance, with {port} and {version}; without it, the slot's
run block is used (its {version} becomes V). A new slot needs COMMAND. Commands
and gates run on vipswap's host: admin.allow_run must be true for them.

Any failure before the switch leaves prod as it was and names the failed step;
a failed rollout is aborted (prod returns to the old slot). The deploy runs
inside vipswap: it goes on if this command is interrupted. Exit 0 when it
succeeded, 1 when it failed. One history entry records it, with its steps.`,
		Example: `  vipswap deploy --slot green --version 2.1 --check /api/ping?slot=green
  vipswap deploy --slot v22 --version 2.2 --strategy rollout --steps 10,50,100 --interval 30s \
      -- vipswap app --listen 127.0.0.1:{port} --slot v22 --version {version}
  vipswap deploy --slot green --version 2.1 --gate 'vipswap verify --url $VIPSWAP_STAGE_URL --duration 5s' --json
  vipswap deploy --slot green --version 2.1 --shadow 5m --shadow-max-differ-rate 0.001 --shadow-max-p99-ratio 1.2`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Slot == "" || req.Version == "" {
				return &usageError{msg: "--slot and --version are required"}
			}
			if cmd.ArgsLenAtDash() < 0 && len(args) > 0 {
				return &usageError{msg: fmt.Sprintf("unexpected argument %q: put the command after --", args[0])}
			}
			if cmd.ArgsLenAtDash() > 0 {
				return &usageError{msg: fmt.Sprintf("unexpected argument %q before --", args[0])}
			}
			req.Command = args
			if shadow.Duration != "" {
				shadow.MaxErrorRate = &maxErrorRate // 0 too: no error allowed
				req.Shadow = &shadow
			} else if fs := cmd.Flags(); fs.Changed("shadow-percent") || fs.Changed("shadow-max-differ-rate") || fs.Changed("shadow-max-error-rate") ||
				fs.Changed("shadow-max-p99-ratio") || fs.Changed("shadow-min-requests") || fs.Changed("shadow-ignore-field") {
				return &usageError{msg: "--shadow DURATION is required with the other --shadow-* flags"}
			}
			return f.run(cmd, func(ctx context.Context, c *client.Client) (wire.Progress, error) { return c.Deploy(ctx, req) })
		},
	}
	fs := cmd.Flags()
	f = releaseFlagsOf(fs, &req.Warmup, &req.WarmupPath, &req.Timeout, &req.Reason, "how long each wait may take (health, gates, drain)")
	fs.StringVar(&req.Slot, "slot", "", "the slot the new version starts in (the standby, an idle or a new one)")
	fs.StringVar(&req.Version, "version", "", "the new version's label; {version} in the command")
	fs.IntVar(&req.Replicas, "replicas", 0, "how many instances (default: the slot's, or the active slot's for a new one)")
	fs.StringVar(&req.Strategy, "strategy", "swap", "swap (one atomic switch) or rollout (weighted steps, judged, aborted on a breach)")
	fs.StringVar(&req.Plan, "plan", "", "with --strategy rollout: a plan under rollouts: in the configuration")
	fs.Float64SliceVar(&req.Steps, "steps", nil, "with --strategy rollout: the weights in percent, such as 10,50,100")
	fs.StringVar(&req.Interval, "interval", "", "with --strategy rollout: how long each step lasts")
	fs.StringArrayVar(&req.Checks, "check", nil, "a path the stage listener must answer with a 2xx (repeatable)")
	fs.StringArrayVar(&req.Gates, "gate", nil, "a shell command that must exit 0; it gets $VIPSWAP_STAGE_URL (repeatable)")
	fs.StringVar(&req.Keep, "keep", "10m", "how long the old slot keeps running for an instant rollback")
	fs.StringVar(&shadow.Duration, "shadow", "", "a gate before the switch: copy prod's requests to SLOT this long (such as 5m) and compare the answers")
	fs.Float64Var(&shadow.Percent, "shadow-percent", 100, "with --shadow: the share of prod's requests copied, in percent")
	fs.Float64Var(&shadow.MaxDifferRate, "shadow-max-differ-rate", 0, "with --shadow: the highest share of differing answers (0.001 is 0.1%)")
	fs.Float64Var(&maxErrorRate, "shadow-max-error-rate", 0.01, "with --shadow: the highest share of copies SLOT may fail")
	fs.Float64Var(&shadow.MaxP99Ratio, "shadow-max-p99-ratio", 0, "with --shadow: SLOT's p99 at most this times prod's (1.2: within 20%; 0: no bound)")
	fs.IntVar(&shadow.MinRequests, "shadow-min-requests", 100, "with --shadow: how many compared copies a pass needs")
	fs.StringArrayVar(&shadow.IgnoreFields, "shadow-ignore-field", nil, "with --shadow: a JSON field left out of the comparison (repeatable)")
	return cmd
}

func newRollingCmd() *cobra.Command {
	var req wire.RollingRequest
	var f *releaseFlags
	cmd := &cobra.Command{
		Use:   "rolling SLOT [--version V] [flags] [-- COMMAND...]",
		Short: "update a slot's instances in place, a few at a time",
		Long: `For each instance of SLOT in turn (--max-unavailable at once): drain it, wait until
it has no request in flight, stop it (SIGTERM), start the new version on the
same address, wait until it is healthy, warm it up, and put it back. The slot
keeps serving on its other instances throughout. If a new instance does not
become healthy within --timeout, the update stops, the old version is started
again in its place and put back, and the command exits 1 with the reason.

COMMAND (with {port} and {version}) replaces the slot's run block; without it
each instance restarts with its run block and {version} set to V. SLOT must be
one whose instances vipswap starts (a run: block). The update runs inside
vipswap; one history entry records it, with its steps.`,
		Example: `  vipswap rolling blue --version 1.1
  vipswap rolling blue --version 1.1 --max-unavailable 2 --warmup 50 -- ./myapp --port {port}`,
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash == 0 || (dash < 0 && len(args) != 1) || dash > 1 {
				return &usageError{msg: "want one SLOT, then optionally -- COMMAND..."}
			}
			req.Slot = args[0]
			if dash == 1 {
				req.Command = args[1:]
			}
			return f.run(cmd, func(ctx context.Context, c *client.Client) (wire.Progress, error) { return c.Rolling(ctx, req) })
		},
	}
	fs := cmd.Flags()
	f = releaseFlagsOf(fs, &req.Warmup, &req.WarmupPath, &req.Timeout, &req.Reason, "how long each wait may take (requests in flight, health)")
	fs.StringVar(&req.Version, "version", "", "the new version's label; {version} in the command (default: the slot's)")
	fs.IntVar(&req.MaxUnavailable, "max-unavailable", 1, "how many instances are out of rotation at once")
	return cmd
}

// releaseFlags are the flags deploy and rolling share.
type releaseFlags struct {
	admin  *string
	asJSON *bool
	reason *string
}

// releaseFlagsOf registers the shared flags on fs, into the request's
// fields.
func releaseFlagsOf(fs *pflag.FlagSet, warmup *int, warmupPath, timeout, reason *string, timeoutHelp string) *releaseFlags {
	f := &releaseFlags{admin: adminFlag(fs), asJSON: fs.Bool("json", false, "print the outcome as JSON (no live progress)"), reason: reason}
	fs.IntVar(warmup, "warmup", 0, "GET requests each new instance gets before it takes traffic")
	fs.StringVar(warmupPath, "warmup-path", "/", "the path the warm-up requests ask for")
	fs.StringVar(timeout, "timeout", "2m", timeoutHelp)
	fs.StringVar(reason, "reason", "", "why, recorded in the history (at most 1 KiB)")
	return f
}

// run starts a release and follows it until it ends.
func (f *releaseFlags) run(cmd *cobra.Command, start func(context.Context, *client.Client) (wire.Progress, error)) error {
	if n := len(*f.reason); n > api.MaxReason {
		return &usageError{msg: fmt.Sprintf("--reason: %d bytes, at most %d are allowed", n, api.MaxReason)}
	}
	c := newClient(*f.admin)
	p, err := start(cmd.Context(), c)
	if err != nil {
		return err
	}
	return follow(cmd.Context(), c, p, *f.asJSON, cmd.OutOrStdout())
}

// follow shows a release's progress until it ends: each step as it ends,
// the health counts and the rollout's progress while a step waits. It
// returns an error (exit 1) when the release failed.
func follow(ctx context.Context, c *client.Client, p wire.Progress, asJSON bool, out io.Writer) error {
	if !asJSON {
		fmt.Fprintf(out, "%s %s: slot %s, version %s\n", p.Kind, p.ID, p.Slot, p.Version)
	}
	shown, last := 0, ""
	var lastErr time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if !asJSON {
			for ; shown < len(p.Steps); shown++ {
				s := p.Steps[shown]
				if s.Result == "running" {
					if line := printable(waiting(p, s)); line != last {
						fmt.Fprintln(out, line)
						last = line
					}
					break
				}
				mark := "ok"
				if s.Result != "ok" {
					mark = "FAILED"
				}
				// A detail may quote prod's clients (a shadow step's
				// differing requests): shown escaped.
				fmt.Fprintf(out, "  %-6s %-28s %7.2fs  %s\n", mark, s.Name, s.Seconds, printable(s.Detail))
				last = ""
			}
		}
		if p.State != "running" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped following %s %s; it goes on inside vipswap (GET /v1/releases/%s)", p.Kind, p.ID, p.ID)
		case <-tick.C:
		}
		next, err := c.Release(ctx, p.ID)
		if err != nil {
			if lastErr.IsZero() {
				lastErr = time.Now()
			}
			var apiErr *client.Error
			if errors.As(err, &apiErr) || time.Since(lastErr) > 30*time.Second {
				return fmt.Errorf("following %s %s: %w", p.Kind, p.ID, err)
			}
			continue
		}
		lastErr, p = time.Time{}, next
	}
	if asJSON {
		if err := writeJSON(out, p); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "%s %s %s in %s: prod served %s", p.Kind, p.ID, p.State,
			p.Ended.Sub(p.Started).Round(time.Millisecond), describeServed(p.Requests, p.Failed, p.InstanceErrors, p.ClientErrors))
		if p.HistoryID != 0 {
			fmt.Fprintf(out, " (history %d)", p.HistoryID)
		}
		fmt.Fprintln(out)
		if p.Kept != "" {
			fmt.Fprintln(out, printable(p.Kept))
		}
	}
	if p.State != "succeeded" {
		return fmt.Errorf("%s failed at step %q: %s", p.Kind, p.FailedStep, p.Error)
	}
	return nil
}

// waiting describes a running step: what it waits for, and how far.
func waiting(p wire.Progress, s wire.Step) string {
	line := "  ...    " + s.Name
	if p.Instances > 0 {
		line += fmt.Sprintf(": %d/%d healthy", p.Healthy, p.Instances)
	}
	if r := p.Rollout; r != nil && r.Running {
		w := r.Weights[r.To]
		bar := strings.Repeat("#", int(w/5)) + strings.Repeat(".", 20-int(w/5))
		line += fmt.Sprintf(": [%s] %s %.1f%% (step %d of %d)", bar, r.To, w, r.Step+1, len(r.Steps))
		if r.Paused {
			line += ", paused: vipswap promote"
		}
	}
	return line
}
