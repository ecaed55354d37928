package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/wire"
)

func newHistoryCmd() *cobra.Command {
	var admin *string
	var limit *int
	var before *uint64
	var asJSON *bool
	cmd := &cobra.Command{
		Use:   "history",
		Short: "every change: who made it, when, why, and what it cost",
		Long: `Lists the history newest first: swaps, rollbacks, drains, reloads, refused
operations with their reason, and for each switch the traffic around it.`,
		Example: `  vipswap history
  vipswap history --limit 100 --json
  vipswap history --before 41              # the page after entry 41`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if *limit < 1 || *limit > 1000 {
				return &usageError{msg: fmt.Sprintf("--limit: want 1 to 1000, got %d", *limit)}
			}
			if cmd.Flags().Changed("before") && *before == 0 {
				return &usageError{msg: "--before: history ids start at 1, got 0"}
			}
			h, next, err := newClient(*admin).HistoryPage(cmd.Context(), *before, *limit)
			if err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(cmd.OutOrStdout(), h)
			}
			printHistory(cmd.OutOrStdout(), h)
			if next != 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "older entries: vipswap history --before %d\n", next)
			}
			return nil
		},
	}
	admin = adminFlag(cmd.Flags())
	limit = cmd.Flags().Int("limit", 20, "how many entries, newest first (at most 1000)")
	before = cmd.Flags().Uint64("before", 0, "only entries older than this ID (the next page)")
	asJSON = cmd.Flags().Bool("json", false, "print the entries as JSON")
	return cmd
}

func printHistory(w io.Writer, h []wire.HistoryEntry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tACTOR\tOPERATION\tCHANGE\tRESULT\tREV\tAROUND THE SWITCH\tREASON")
	for _, e := range h {
		change := e.Instance
		switch {
		case change != "":
		case e.Operation == "slot add": // prod did not move
			change = e.To
		case e.Operation == "slot remove":
			change = e.From
		case e.To == "":
			change = e.From // refused: nothing moved
		default:
			change = e.From + "→" + e.To
		}
		if len(e.Steps) > 0 && len(e.Changes) > 0 { // a release: where, and which version
			_, version, _ := strings.Cut(e.Changes[0], ": ")
			if e.Operation == "rolling" {
				change = e.To
			}
			change += " (" + version + ")"
		}
		for _, c := range e.Changes {
			if split, ok := strings.CutPrefix(c, "prod: "); ok && strings.Contains(split, ", ") { // a split, not all on one slot
				change += " (" + split + ")"
			}
		}
		result := e.Result
		if e.Forced {
			result += " (forced)"
		}
		if e.Error != "" { // "refused: swap refused: …" says it twice
			result += ": " + refusedWhy(e.Error)
		}
		rev := "-"
		if e.Revision != 0 {
			rev = fmt.Sprint(e.Revision)
		}
		measured := ""
		if m := e.Measurement; m != nil && len(e.Steps) > 0 { // a release
			measured = fmt.Sprintf("%s over %.1fs; %s", describeServed(m.Served, m.Failed, m.InstanceErrors, m.ClientErrors), m.WindowSeconds, describeSteps(e.Steps))
		} else if m != nil {
			measured = describeMeasurement(m)
			if !m.Complete {
				measured += " (gave up)"
			}
		}
		// Everything but the numbers came from whoever called the API.
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Time.Local().Format(time.DateTime),
			printable(e.Actor), printable(e.Operation), printable(change), printable(result), rev, measured, printable(e.Reason))
	}
	tw.Flush()
}

// describeSteps says a release's steps and how long each took.
func describeSteps(steps []wire.Step) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = fmt.Sprintf("%s %.1fs", printable(s.Name), s.Seconds)
		if s.Result != "ok" {
			parts[i] += " " + printable(s.Result)
		}
	}
	return "steps: " + strings.Join(parts, ", ")
}
