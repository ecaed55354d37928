package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/verify"
	"github.com/vipswap/vipswap/wire"
)

func newVerifyCmd() *cobra.Command {
	var o verify.Options
	var admin *string
	var asJSON *bool
	var swapEvery *time.Duration
	var during *string
	cmd := &cobra.Command{
		Use:   "verify --url URL [--concurrency N] [--duration D | --requests N] [--swap-every D | --during COMMAND]",
		Short: "send load to a URL and prove nothing failed (exit 1 on any failure)",
		Long: `Sends GET requests to URL from --concurrency clients, each one at a time, for
--duration (or --requests in all), and reports the requests, the failures by
kind (status: a 5xx answer; connect; reset: the connection closed before a
whole answer; timeout: none within --timeout; replayed: a kept-alive connection
closed before any answer and the request was sent again, which a POST could
not be), latency percentiles, and which
slot and version answered each second (read from a JSON body with "slot" and
"version", as the sample application's /api/test answers).

--swap-every D swaps prod every D through the admin API while the load runs,
and once more after it if need be, so prod ends on the slot it started on.
--during COMMAND runs a shell command (a deploy, a rolling update) and sends
load until it exits; its failure fails verify too. Exit 0 when every request
was answered below 500 (and every swap or the command succeeded), else 1.`,
		Example: `  vipswap verify --url http://127.0.0.1:8080/api/test --concurrency 200 --duration 30s --swap-every 2s
  vipswap verify --url http://127.0.0.1:8080/api/test --during "vipswap deploy --slot green --version 2.1"`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case o.URL == "":
				return &usageError{msg: "--url is required"}
			case o.Concurrency < 1 || o.Concurrency > 10000:
				return &usageError{msg: fmt.Sprintf("--concurrency: want 1 to 10000, got %d", o.Concurrency)}
			case o.Duration < 0 || o.Requests < 0 || o.Timeout <= 0:
				return &usageError{msg: "--duration and --requests want 0 or more, --timeout above zero"}
			case *swapEvery < 0:
				return &usageError{msg: "--swap-every: want a duration above zero"}
			case *swapEvery > 0 && *during != "":
				return &usageError{msg: "--swap-every and --during do not go together"}
			case *during == "" && o.Duration == 0 && o.Requests == 0:
				return &usageError{msg: "give --duration, --requests or --during: the load must end"}
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			done := make(chan struct{})
			o.Done = done
			var wg sync.WaitGroup
			var sideErr error
			var swaps int
			var startSlot string // the slot prod was on when the run began
			switch {
			case *swapEvery > 0:
				c := newClient(*admin)
				st, err := c.Status(ctx)
				if err != nil {
					return fmt.Errorf("--swap-every: reading which slot is active: %w", err)
				}
				startSlot = st.Active
				if w := st.Listeners[0].Weights; len(w) > 1 {
					return fmt.Errorf("--swap-every: prod is split (%s): a swap would end the shift; finish or undo it first (vipswap shift)", split(w))
				}
				wg.Go(func() {
					t := time.NewTicker(*swapEvery)
					defer t.Stop()
					for {
						select {
						case <-ctx.Done():
							return
						case <-t.C:
						}
						// A swap once asked for runs to its end even if the
						// load ends meanwhile, so the count below is true.
						sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
						_, err := c.Swap(sctx, wire.ChangeRequest{Reason: "vipswap verify --swap-every"})
						scancel()
						if err != nil {
							if ctx.Err() == nil && sideErr == nil {
								sideErr = fmt.Errorf("swap %d: %w", swaps+1, err)
							}
							continue
						}
						swaps++
					}
				})
			case *during != "":
				c := exec.CommandContext(ctx, "/bin/sh", "-c", *during)
				c.Stdout, c.Stderr = cmd.ErrOrStderr(), cmd.ErrOrStderr()
				if err := c.Start(); err != nil {
					return fmt.Errorf("--during: %w", err)
				}
				wg.Go(func() {
					if err := c.Wait(); err != nil && ctx.Err() == nil {
						sideErr = fmt.Errorf("--during %q: %w", *during, err)
					}
					close(done)
				})
			}
			r, err := verify.Run(ctx, o)
			cancel()
			wg.Wait()
			if err != nil {
				return &usageError{msg: err.Error()}
			}
			putBack := ""
			if startSlot != "" {
				// Leave prod on the slot the run found it on, so what
				// follows (a deploy to the standby slot) finds it there.
				// Asked of vipswap rather than counted: a swap whose answer
				// was lost may still have happened.
				putBack, err = putProdBack(cmd.Context(), newClient(*admin), startSlot)
				if err != nil && sideErr == nil {
					sideErr = err
				}
			}
			out := cmd.OutOrStdout()
			if *asJSON {
				if err := writeJSON(out, r); err != nil {
					return err
				}
			} else {
				verify.Report(out, r)
				if *swapEvery > 0 {
					fmt.Fprintf(out, "swaps: %d%s\n", swaps, putBack)
				}
			}
			switch {
			case r.Requests == 0:
				return errors.New("no request was sent")
			case r.Failed > 0:
				return fmt.Errorf("%d of %d requests failed", r.Failed, r.Requests)
			case sideErr != nil:
				return sideErr
			}
			return nil
		},
	}
	fs := cmd.Flags()
	admin = adminFlag(fs)
	asJSON = fs.Bool("json", false, "print the result as JSON")
	fs.StringVar(&o.URL, "url", "", "the URL to send GET requests to")
	fs.IntVar(&o.Concurrency, "concurrency", 50, "how many clients send requests at once")
	fs.DurationVar(&o.Duration, "duration", 0, "how long to send load")
	fs.Int64Var(&o.Requests, "requests", 0, "how many requests to send in all")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "how long one request may take")
	swapEvery = fs.Duration("swap-every", 0, "swap prod this often while the load runs")
	during = fs.String("during", "", "a shell command to run under load; the load stops when it exits")
	return cmd
}

// putProdBack swaps prod back to slot if it is on another one, and says so
// for the report ("" if it already was).
func putProdBack(ctx context.Context, c *client.Client, slot string) (string, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("after the run, reading which slot is active: %w", err)
	}
	if st.Active == slot {
		return "", nil
	}
	rev := st.Revision
	res, err := c.Swap(ctx, wire.ChangeRequest{IfRevision: &rev, Reason: "vipswap verify --swap-every: back to the slot it found"})
	if err != nil {
		return "", fmt.Errorf("prod is left on %s, not on %s where the run found it: swapping back: %s", st.Active, slot, err)
	}
	if res.To != slot {
		return "", fmt.Errorf("after the run prod is on %s, not %s where the run found it", res.To, slot)
	}
	return fmt.Sprintf(", and one after the load to put prod back on %s", res.To), nil
}
