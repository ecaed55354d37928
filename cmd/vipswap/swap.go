package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/client"
)

func swapCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("swap", stderr)
	admin := adminFlag(fs)
	force := fs.Bool("force", false, "swap even if the standby slot has no healthy instance")
	wait := fs.Bool("wait", false, "return once the old active slot has no request in flight")
	timeout := fs.Duration("timeout", 30*time.Second, "with --wait: how long to wait for the old slot to drain")
	if err := parse(fs, args); err != nil {
		return err
	}
	c := client.New(*admin)
	res, err := c.Swap(ctx, api.SwapRequest{Force: *force})
	if err != nil {
		return err
	}
	note := ""
	if res.Forced {
		note = " (forced: it had no healthy instance)"
	}
	fmt.Fprintf(stdout, "swapped %s -> %s (revision %d)%s\n", res.From, res.To, res.Revision, note)
	if !*wait {
		return nil
	}
	took, err := waitDrained(ctx, c, res.From, *timeout, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s drained in %s\n", res.From, took.Round(time.Millisecond))
	return nil
}

// waitDrained polls the status until slot has no prod request in flight,
// printing progress to progress about once a second.
func waitDrained(ctx context.Context, c *client.Client, slot string, limit time.Duration, progress io.Writer) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastPrint := start
	for {
		s, err := c.Status(ctx)
		if err != nil && ctx.Err() == nil {
			return 0, err
		}
		var n int64
		for _, ss := range s.Slots {
			if ss.Name == slot {
				n = ss.InFlight.Prod
			}
		}
		if err == nil && n == 0 {
			return time.Since(start), nil
		}
		if time.Since(lastPrint) >= time.Second {
			fmt.Fprintf(progress, "draining %s: %s in flight (%s)\n", slot, plural(n, "request"), time.Since(start).Round(100*time.Millisecond))
			lastPrint = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s still has %s in flight after %s", slot, plural(n, "request"), limit)
		case <-tick.C:
		}
	}
}

// plural returns "1 request" or "3 requests".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
