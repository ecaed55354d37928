package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/wire"
)

func newShadowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shadow start|stop|status",
		Short: "copy a sample of prod's requests to a standby slot and compare its answers",
		Long: `A shadow copies a share of prod's requests to a slot that takes no prod traffic,
after prod's answer is on its way, and compares the two answers: status, content
type, headers, body (JSON without ignored fields, or bytes), latency. Prod never
waits for a copy: the queue, the connections and the memory are bounded and a
copy that does not fit is dropped and counted. Only GET and HEAD are copied
unless --methods names others: a copied POST writes twice. Copies carry the
header X-Vipswap-Shadow: copy, so an application can skip side effects.`,
	}
	cmd.AddCommand(newShadowStartCmd(), newShadowStopCmd(), newShadowStatusCmd())
	return cmd
}

func newShadowStartCmd() *cobra.Command {
	var f *changeFlags
	var to, methods, duration *string
	var percent *float64
	var fields, headers *[]string
	cmd := &cobra.Command{
		Use:   "start --to SLOT --percent P [--methods GET,HEAD] [--duration D]",
		Short: "start copying prod's requests to a slot",
		Example: `  vipswap shadow start --to green --percent 10
  vipswap shadow start --to green --percent 100 --duration 5m --ignore-field timestamp --ignore-field '$.meta.request_id'
  vipswap shadow start --to green --percent 5 --methods GET,HEAD,POST   # POSTs run twice: only for an application that skips side effects of copies`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if *to == "" || !cmd.Flags().Changed("percent") {
				return &usageError{msg: "--to and --percent are required"}
			}
			if !(*percent > 0 && *percent <= 100) { // NaN too
				return &usageError{msg: fmt.Sprintf("--percent: want above 0 and at most 100, got %v", *percent)}
			}
			if *duration != "" {
				if d, err := time.ParseDuration(*duration); err != nil || d <= 0 {
					return &usageError{msg: fmt.Sprintf("--duration: want a duration above zero such as 5m, got %q", *duration)}
				}
			}
			req := wire.ShadowRequest{ChangeRequest: f.request(), To: *to, Percent: *percent, Duration: *duration,
				IgnoreFields: *fields, IgnoreHeaders: *headers}
			if *methods != "" {
				for m := range strings.SplitSeq(*methods, ",") {
					req.Methods = append(req.Methods, strings.TrimSpace(m))
				}
			}
			res, err := newClient(*f.admin).StartShadow(cmd.Context(), req)
			if err != nil {
				return err
			}
			return reportChange(cmd.OutOrStdout(), res, *f.asJSON, func(out io.Writer, res wire.Change) {
				fmt.Fprintf(out, "shadow: %s%% of prod's requests copied to %s (revision %d)\n", strconv.FormatFloat(*percent, 'f', -1, 64), res.To, res.Revision)
				fmt.Fprintln(out, "follow it with: vipswap shadow status --watch")
			})
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	to = cmd.Flags().String("to", "", "the slot the copies go to (it must take no prod traffic)")
	percent = cmd.Flags().Float64("percent", 0, "the share of prod's requests copied, in percent (one decimal)")
	methods = cmd.Flags().String("methods", "", "the methods copied, comma-separated (default GET,HEAD; others write twice)")
	duration = cmd.Flags().String("duration", "", "end by itself after this long (such as 5m)")
	fields = cmd.Flags().StringArray("ignore-field", nil, "a JSON field left out of the comparison: a name at any depth, or $.a.b (repeatable)")
	headers = cmd.Flags().StringArray("ignore-header", nil, "a response header left out of the comparison (repeatable)")
	return cmd
}

func newShadowStopCmd() *cobra.Command {
	var f *changeFlags
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "stop copying prod's requests",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := newClient(*f.admin).StopShadow(cmd.Context(), f.request())
			if err != nil {
				return err
			}
			return reportChange(cmd.OutOrStdout(), res, *f.asJSON, func(out io.Writer, res wire.Change) {
				fmt.Fprintf(out, "shadow to %s stopped (revision %d)\n", res.To, res.Revision)
			})
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	return cmd
}

func newShadowStatusCmd() *cobra.Command {
	var admin *string
	var asJSON, watch *bool
	cmd := &cobra.Command{
		Use:     "status [--json | --watch]",
		Short:   "the running shadow: counts, rates, latency, the latest differing requests",
		Example: "  vipswap shadow status --watch",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := newClient(*admin)
			if *watch && *asJSON {
				return &usageError{msg: "--watch and --json do not go together"}
			}
			if *watch {
				return watchShadow(cmd.Context(), c, cmd.OutOrStdout())
			}
			sh, err := c.Shadow(cmd.Context())
			if err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(cmd.OutOrStdout(), sh)
			}
			printShadow(cmd.OutOrStdout(), sh)
			return nil
		},
	}
	admin = adminFlag(cmd.Flags())
	asJSON = cmd.Flags().Bool("json", false, "print it as JSON")
	watch = cmd.Flags().Bool("watch", false, "redraw it every second until interrupted")
	return cmd
}

func watchShadow(ctx context.Context, c *client.Client, w io.Writer) error {
	return redraw(ctx, w, func(ctx context.Context) (func(io.Writer), error) {
		sh, err := c.Shadow(ctx)
		return func(w io.Writer) { printShadow(w, sh) }, err
	})
}

// shadowLine is the one line vipswap status gives a running shadow.
func shadowLine(sh *wire.Shadow) string {
	s := fmt.Sprintf("shadow: %s%% of prod's %s to %s", strconv.FormatFloat(sh.Percent, 'f', -1, 64), strings.Join(sh.Methods, ","), printable(sh.To))
	if f := sh.Figures; f != nil {
		s += fmt.Sprintf("; %s same, %s differ (%.2f%%), %s errors, %s dropped", thousands(f.Same), thousands(f.Differ),
			100*f.DifferRate, thousands(f.Error), thousands(f.Dropped["total"]))
		if f.Stopped != "" {
			s += "; stopped: " + printable(f.Stopped)
		}
	}
	return s
}

// printShadow draws a shadow: what it copies, its counts, latency and the
// latest differing requests.
func printShadow(w io.Writer, sh *wire.Shadow) {
	if sh == nil {
		fmt.Fprintln(w, "no shadow runs")
		return
	}
	fmt.Fprintln(w, shadowLine(sh))
	left := ""
	if sh.Until != nil {
		left = fmt.Sprintf(", ends in %s", time.Until(*sh.Until).Round(time.Second))
	}
	fmt.Fprintf(w, "  started %s by %s%s\n", sh.Started.Local().Format("15:04:05"), printable(sh.Actor), left)
	var ignored []string
	if len(sh.IgnoreFields) > 0 {
		ignored = append(ignored, "fields "+printable(strings.Join(sh.IgnoreFields, ", ")))
	}
	if len(sh.IgnoreHeaders) > 0 {
		ignored = append(ignored, "headers "+printable(strings.Join(sh.IgnoreHeaders, ", ")))
	}
	if len(ignored) > 0 {
		fmt.Fprintf(w, "  ignored: %s\n", strings.Join(ignored, "; "))
	}
	f := sh.Figures
	if f == nil {
		fmt.Fprintln(w, "  this node does not mirror (no built-in proxy)")
		return
	}
	fmt.Fprintf(w, "  sampled %s; target error rate %.2f%%; bodies compared by status and type only: %s\n",
		thousands(f.Sampled), 100*f.ErrorRate, thousands(f.BodyUncompared))
	var drops []string
	keys := make([]string, 0, len(f.Dropped))
	for k := range f.Dropped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k != "total" && f.Dropped[k] > 0 {
			drops = append(drops, fmt.Sprintf("%s %s", k, thousands(f.Dropped[k])))
		}
	}
	if len(drops) > 0 {
		fmt.Fprintf(w, "  dropped: %s\n", strings.Join(drops, ", "))
	}
	fmt.Fprintf(w, "  latency p50/p99: prod %.1f/%.1f ms, %s %.1f/%.1f ms", f.ProdP50MS, f.ProdP99MS, printable(sh.To), f.TargetP50MS, f.TargetP99MS)
	if f.P99Ratio > 0 {
		fmt.Fprintf(w, " (p99 ×%.2f)", f.P99Ratio)
	}
	fmt.Fprintln(w)
	if len(f.Samples) > 0 {
		fmt.Fprintln(w, "  latest differing requests:")
	}
	const shown = 5
	for i, d := range f.Samples {
		if i == shown {
			fmt.Fprintf(w, "    and %d more (vipswap shadow status --json)\n", len(f.Samples)-shown)
			break
		}
		vals := ""
		if d.Prod != "" || d.Target != "" {
			vals = fmt.Sprintf(": %s vs %s", printable(d.Prod), printable(d.Target))
		}
		fmt.Fprintf(w, "    %s %s  %d vs %d  at %s%s\n", d.Time.Local().Format("15:04:05"), printable(d.Request), d.ProdStatus, d.TargetStatus, printable(d.Where), vals)
	}
}
