package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/wire"
)

func newSlotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "slot add|remove NAME",
		Short: "add a slot (a release unit) at runtime, or tear one down",
		Long: `A slot added at runtime is stored in the state, so a restarted vipswap serves it
too; it is probed at once and can take traffic through shift, rollout, routes or
stage once healthy. Removing a slot takes its instances out of the routing table
and releases what vipswap held for them. A slot that takes traffic (active,
standby, a share of prod, a rollout's canary) is never removed; one that a route
names or that has requests in flight is refused unless --force.`,
	}
	cmd.AddCommand(newSlotAddCmd(), newSlotRemoveCmd())
	return cmd
}

func newSlotAddCmd() *cobra.Command {
	var f *changeFlags
	var instances *[]string
	var version, runFile *string
	cmd := &cobra.Command{
		Use:   "add NAME (--instances HOST:PORT,... | --run-file FILE)",
		Short: "add a slot at runtime",
		Long: `Adds a slot of running instances (--instances), or one whose instances vipswap
starts itself (--run-file: a YAML file holding a slot's run: block, as in the
configuration: command, address, replicas, stop_timeout). Either way the slot is
stored in the state: a restarted vipswap serves it (and starts its instances).`,
		Example: `  vipswap slot add red --instances 127.0.0.1:9005,127.0.0.1:9006 --version 2.1
  vipswap slot add red --run-file red.yaml --version 2.1`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			req := wire.AddSlotRequest{ChangeRequest: f.request(), Name: args[0], Instances: *instances, Version: *version}
			switch {
			case len(*instances) == 0 && *runFile == "":
				return &usageError{msg: "--instances (host:port, comma-separated) or --run-file is required"}
			case len(*instances) > 0 && *runFile != "":
				return &usageError{msg: "--instances and --run-file do not go together"}
			case *runFile != "":
				data, err := os.ReadFile(*runFile)
				if err != nil {
					return err
				}
				run, err := config.ParseRun(*runFile, data)
				if err != nil {
					return err
				}
				req.Run = &wire.RunSpec{Command: run.Command, Address: run.Address, Replicas: run.Replicas, StopTimeout: run.StopTimeout}
			}
			res, err := newClient(*f.admin).AddSlot(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printSlotChange(cmd.OutOrStdout(), res, *f.asJSON, "added slot "+args[0])
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	instances = cmd.Flags().StringSlice("instances", nil, "the slot's instances, host:port, comma-separated")
	version = cmd.Flags().String("version", "", "a label for what the slot runs, shown by status and the dashboard")
	runFile = cmd.Flags().String("run-file", "", "a YAML file with the slot's run: block: vipswap starts its instances")
	return cmd
}

func newSlotRemoveCmd() *cobra.Command {
	var f *changeFlags
	var quiet *time.Duration
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "tear a slot down",
		Long: `Removes the slot. With --wait it first waits, up to --timeout, until the slot
has served no request for --quiet (the post-release check: no traffic left, not
only none in flight), says when its last request was, then removes it.`,
		Example: `  vipswap slot remove blue --wait --quiet 1m --timeout 30m`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			switch {
			case *quiet <= 0:
				return &usageError{msg: fmt.Sprintf("--quiet: want a duration above zero, got %s", *quiet)}
			case cmd.Flags().Changed("quiet") && !*f.wait:
				return &usageError{msg: "--quiet: only with --wait (it is how long the slot must have served nothing before it goes)"}
			case *f.wait && *f.timeout <= *quiet:
				return &usageError{msg: fmt.Sprintf("--timeout %s: want more than --quiet %s, or the slot can never be quiet long enough", *f.timeout, *quiet)}
			}
			c := newClient(*f.admin)
			ctx := cmd.Context()
			req := f.request()
			if *f.wait {
				// Ask first: no point waiting for a slot that may not go.
				dry := req
				dry.DryRun = true
				res, err := c.RemoveSlot(ctx, args[0], dry)
				if err != nil {
					return err
				}
				if res.Refused != "" && !strings.Contains(res.Refused, "in flight") {
					return fmt.Errorf("%s", res.Refused)
				}
				last, err := waitQuiet(ctx, c, args[0], *quiet, *f.timeout, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				when := "it has answered no request since vipswap started"
				if !last.IsZero() {
					when = fmt.Sprintf("its last request ended about %s (%s ago)", last.Local().Format(time.DateTime), time.Since(last).Round(time.Second))
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s is quiet: %s\n", args[0], when)
			}
			res, err := c.RemoveSlot(ctx, args[0], req)
			if err != nil {
				return err
			}
			return printSlotChange(cmd.OutOrStdout(), res, *f.asJSON, "removed slot "+args[0])
		},
	}
	f = changeFlagsOf(cmd.Flags(), "first wait until the slot has had no request for --quiet")
	quiet = cmd.Flags().Duration("quiet", 30*time.Second, "with --wait: how long the slot must have served nothing")
	return cmd
}

func newStageCmd() *cobra.Command {
	var f *changeFlags
	cmd := &cobra.Command{
		Use:   "stage SLOT",
		Short: "make the stage listener follow SLOT (the slot a swap makes active)",
		Long: `SLOT becomes the standby slot: stage sends its requests there and a swap makes it
active. Refused when SLOT is the active slot, or has no routable instance
(unless --force).`,
		Example: `  vipswap slot add red --instances 127.0.0.1:9005 && vipswap stage red`,
		Args:    exactArgs("SLOT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := newClient(*f.admin).SetStage(cmd.Context(), wire.StageRequest{ChangeRequest: f.request(), Slot: args[0]})
			if err != nil {
				return err
			}
			return printSlotChange(cmd.OutOrStdout(), res, *f.asJSON, "stage follows "+args[0])
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	return cmd
}

// printSlotChange reports a slot add, remove or stage change.
func printSlotChange(w io.Writer, res wire.Change, asJSON bool, done string) error {
	return reportChange(w, res, asJSON, func(w io.Writer, res wire.Change) {
		if !res.Applied {
			fmt.Fprintf(w, "nothing to do: %s already (revision %d)\n", done, res.Revision)
			return
		}
		fmt.Fprintf(w, "%s (revision %d)\n", done, res.Revision)
		printWarnings(w, res)
	})
}

// waitQuiet waits until slot has had no request in flight and answered
// none for quiet, and returns about when its last request ended (zero if
// it answered none since vipswap started). vipswap reports the last
// request to the second, from counts it takes once a second; between
// them, what this watches (the slot's served and in-flight counts) fills
// in, and it watches at least one such second.
func waitQuiet(ctx context.Context, c *client.Client, slot string, quiet, limit time.Duration, progress io.Writer) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last time.Time // the later of vipswap's last request and what moved here
	var served int64 = -1
	start, said := time.Now(), time.Now()
	for {
		st, err := c.Status(ctx)
		if err != nil && ctx.Err() == nil {
			return time.Time{}, err
		}
		if err == nil {
			i := slices.IndexFunc(st.Slots, func(s wire.SlotStatus) bool { return s.Name == slot })
			if i < 0 {
				return time.Time{}, fmt.Errorf("no slot %q", slot)
			}
			s := st.Slots[i]
			n, inFlight := int64(0), s.InFlight.Total()
			for _, in := range s.Instances {
				n += in.Served.Total()
			}
			if (served >= 0 && n != served) || inFlight > 0 {
				last = time.Now()
			}
			served = n
			if s.LastRequest != nil && s.LastRequest.After(last) {
				last = *s.LastRequest
			}
			if inFlight == 0 && time.Since(start) > 1500*time.Millisecond && time.Since(last) >= quiet {
				return last, nil
			}
			if time.Since(said) >= 5*time.Second {
				ago := "none since vipswap started"
				if !last.IsZero() {
					ago = time.Since(last).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(progress, "waiting for %s to be quiet: %s in flight, last request %s\n", slot, plural(inFlight, "request"), ago)
				said = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, &timedOutError{msg: fmt.Sprintf("%s still had traffic within the last %s after %s; nothing was removed", slot, quiet, limit)}
		case <-tick.C:
		}
	}
}

func newRouteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route set|remove --path-prefix P ...",
		Short: "send a path prefix (and a header) to a named slot, whatever the weights",
		Long: `A version route sends the prod requests whose path starts with --path-prefix
(and, with --header, that carry that header with --value) to --slot, before
weights and affinity; the longest prefix wins. Routes set here are stored in the
state and recorded in the history; they add to those in the configuration's
routes: and replace one that matches the same requests.`,
	}
	for _, verb := range []string{"set", "remove"} {
		var f *changeFlags
		var prefix, header, value, slot *string
		c := &cobra.Command{
			Use:   verb + " --path-prefix P [--header H --value V]" + map[string]string{"set": " --slot SLOT", "remove": ""}[verb],
			Short: map[string]string{"set": "add or replace a route", "remove": "remove a route set with route set"}[verb],
			Example: map[string]string{
				"set":    "  vipswap route set --path-prefix /api/2.0/ --slot green",
				"remove": "  vipswap route remove --path-prefix /api/2.0/",
			}[verb],
			Args: exactArgs(),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := f.check(); err != nil {
					return err
				}
				if *prefix == "" || (verb == "set" && *slot == "") {
					return &usageError{msg: map[string]string{"set": "--path-prefix and --slot are required", "remove": "--path-prefix is required"}[verb]}
				}
				req := wire.RouteRequest{ChangeRequest: f.request(), PathPrefix: *prefix, Header: *header, Value: *value, Slot: *slot}
				cl := newClient(*f.admin)
				match := *prefix + "*"
				if *header != "" {
					match += " with " + *header + ": " + *value
				}
				op, done := cl.SetRoute, "route "+match+" -> "+*slot
				if verb == "remove" {
					op, done = cl.RemoveRoute, "removed route "+match
				}
				res, err := op(cmd.Context(), req)
				if err != nil {
					return err
				}
				return printSlotChange(cmd.OutOrStdout(), res, *f.asJSON, done)
			},
		}
		f = changeFlagsOf(c.Flags(), "")
		prefix = c.Flags().String("path-prefix", "", "the request path's prefix, starting with /")
		header = c.Flags().String("header", "", "a header the request must carry too (optional)")
		value = c.Flags().String("value", "", "with --header: its value")
		slot = c.Flags().String("slot", "", "where matching requests go")
		if verb == "remove" {
			c.Flags().MarkHidden("slot")
		}
		cmd.AddCommand(c)
	}
	return cmd
}
