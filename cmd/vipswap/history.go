package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/vipswap/vipswap/api"
)

func historyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("history", stderr)
	admin := adminFlag(fs)
	limit := fs.Int("limit", 20, "how many entries, newest first (at most 1000)")
	before := fs.Uint64("before", 0, "only entries older than this ID (the next page)")
	asJSON := fs.Bool("json", false, "print the entries as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *limit < 1 || *limit > 1000 {
		return &usageError{msg: fmt.Sprintf("--limit: want 1 to 1000, got %d", *limit)}
	}
	h, next, err := newClient(*admin).HistoryPage(ctx, *before, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, h)
	}
	printHistory(stdout, h)
	if next != 0 {
		fmt.Fprintf(stderr, "older entries: vipswap history --before %d\n", next)
	}
	return nil
}

func printHistory(w io.Writer, h []api.HistoryEntry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tACTOR\tOPERATION\tCHANGE\tRESULT\tREV\tAROUND THE SWITCH\tREASON")
	for _, e := range h {
		change := e.Instance
		switch {
		case change != "":
		case e.To == "":
			change = e.From // refused: nothing moved
		default:
			change = e.From + "→" + e.To
		}
		result := e.Result
		if e.Forced {
			result += " (forced)"
		}
		if e.Error != "" {
			result += ": " + e.Error
		}
		rev := "-"
		if e.Revision != 0 {
			rev = fmt.Sprint(e.Revision)
		}
		measured := ""
		if m := e.Measurement; m != nil {
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
