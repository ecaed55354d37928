package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/wire"
)

func newStatusCmd() *cobra.Command {
	var admin *string
	var asJSON, watch *bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "slots, instances, health and why, in-flight, and where each listener sends traffic",
		Long: `Shows the state revision, the slot each listener follows, and every instance:
its health with the last check in HAProxy's words (L7OK, L7STS 404, L4CON
connection refused, L7TOUT, ...) and for how long, whether it is drained,
its requests in flight and served.`,
		Example: `  vipswap status
  vipswap status --json | jq '.slots[].instances[] | {addr, healthy, check}'
  vipswap status --watch                   # live, with per-slot rates and latencies`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stdout := cmd.Context(), cmd.OutOrStdout()
			if *watch {
				if *asJSON {
					return &usageError{msg: "--watch and --json do not go together"}
				}
				return watchStatus(ctx, newClient(*admin), stdout)
			}
			s, err := newClient(*admin).Status(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				return writeJSON(stdout, s)
			}
			printStatus(stdout, s)
			return nil
		},
	}
	admin = adminFlag(cmd.Flags())
	asJSON = cmd.Flags().Bool("json", false, "print the status as JSON (shape in docs/api.md)")
	watch = cmd.Flags().Bool("watch", false, "redraw the status every second, with per-slot request rates, until interrupted")
	return cmd
}

// watchStatus redraws the status and the last second's request rates every
// second until ctx ends (Ctrl-C). On a terminal it redraws in place;
// otherwise it prints one block a second.
func watchStatus(ctx context.Context, c *client.Client, w io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	live := isTerminal(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s, err := c.Status(ctx)
		if err == nil {
			var r wire.Rates
			if r, err = c.Rates(ctx); err == nil {
				var b strings.Builder
				printStatus(&b, s)
				printRates(&b, s, r)
				if live {
					fmt.Fprint(w, "\033[H\033[2J") // home, clear
				}
				fmt.Fprintf(w, "%s(%s, every second; Ctrl-C stops)\n\n", b.String(), time.Now().Format("15:04:05"))
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// printRates prints each slot's rates in the newest sample and its average
// over the last minute.
func printRates(w io.Writer, s wire.Status, r wire.Rates) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT	REQ/S	ERR/S	REQ/S 1m	ERR/S 1m")
	recent := r.Samples[max(len(r.Samples)-60, 0):]
	for _, slot := range s.Slots {
		var now wire.SlotRate
		if len(recent) > 0 {
			now = recent[len(recent)-1].Slots[slot.Name]
		}
		var sum wire.SlotRate
		for _, x := range recent {
			sum.Requests += x.Slots[slot.Name].Requests
			sum.Errors += x.Slots[slot.Name].Errors
		}
		n := float64(max(len(recent), 1))
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.1f\t%.1f\n", slot.Name, now.Requests, now.Errors, sum.Requests/n, sum.Errors/n)
	}
	tw.Flush()
}

func printStatus(w io.Writer, s wire.Status) {
	version := func(slot string) string {
		for _, ss := range s.Slots {
			if ss.Name == slot && ss.Version != "" {
				return " (version " + printable(ss.Version) + ")"
			}
		}
		return ""
	}
	fmt.Fprintf(w, "revision %d: active %s%s, standby %s%s\n", s.Revision, s.Active, version(s.Active), s.Standby, version(s.Standby))
	if s.Node != "" {
		role := "follows rollouts another node drives"
		if s.DrivesRollouts {
			role = "drives rollouts"
		}
		fmt.Fprintf(w, "  node  %s (%s; health as this node sees it)\n", s.Node, role)
	}
	if !s.Store.Reachable {
		what := "state store UNREACHABLE since " + s.Store.Since.Local().Format(time.TimeOnly)
		if s.Store.LocalCopy {
			what += ", serving the local copy of the last state seen"
		}
		fmt.Fprintf(w, "  %s: changes are refused (%s)\n", what, printable(s.Store.Error))
	}
	if n := s.Store.NotApplied; n != nil {
		which := "an unreadable state"
		if n.Revision != 0 {
			which = fmt.Sprintf("revision %d", n.Revision)
		}
		fmt.Fprintf(w, "  stored state NOT APPLIED since %s: the store holds %s, which %s; this node serves revision %d and refuses changes until it is repaired (vipswap state import)\n",
			n.Since.Local().Format(time.TimeOnly), which, printable(n.Error), s.Revision)
	}
	for _, p := range s.DataPlanes {
		if p.Applied {
			fmt.Fprintf(w, "  %s: shows revision %d (converged in %.1f ms; re-applied %d times after losing it)\n",
				printable(p.Name), p.Revision, p.ConvergedSeconds*1000, p.Reapplied)
		} else {
			fmt.Fprintf(w, "  %s: revision %d NOT APPLIED since %s: %s\n", printable(p.Name), p.Revision, p.Since.Local().Format(time.TimeOnly), printable(p.Error))
		}
	}
	for _, l := range s.Listeners {
		to := l.Slot
		if len(l.Weights) > 1 {
			to = split(l.Weights) // a shift or a rollout is under way
		}
		fmt.Fprintf(w, "  %-5s %s -> %s (%s)\n", l.Name, l.Addr, to, describeErrors(l.Failed, l.InstanceErrors, l.ClientErrors))
		if len(l.TLS) > 0 {
			fmt.Fprintf(w, "        TLS: %s\n", certificatesText(l.TLS, time.Now()))
		}
	}
	if len(s.AdminTLS) > 0 {
		fmt.Fprintf(w, "  admin TLS: %s\n", certificatesText(s.AdminTLS, time.Now()))
	}
	for _, r := range s.Routes {
		match := r.PathPrefix + "*"
		if r.Header != "" {
			match += " with " + r.Header + ": " + r.Value
		}
		origin := ""
		if r.Origin == "api" {
			origin = " (set with vipswap route)"
		}
		fmt.Fprintf(w, "  route %s -> %s%s\n", printable(match), r.Slot, origin)
	}
	if s.Shadow != nil {
		fmt.Fprintf(w, "  %s\n", shadowLine(s.Shadow))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tVERSION\tROLE\tINSTANCE\tHEALTH\tIN-FLIGHT\tSERVED\t5XX")
	for _, slot := range s.Slots {
		for i, inst := range slot.Instances {
			name, ver, role := slot.Name, printable(slot.Version), slot.Role
			if ver == "" {
				ver = "-"
			}
			if i > 0 {
				name, ver, role = "", "", ""
			}
			h := healthText(inst, time.Now())
			for _, v := range inst.DataPlanes {
				h += "; " + printable(v)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", name, ver, role, inst.Addr, h,
				inst.InFlight.Total(), inst.Served.Total(), inst.Errors.Total())
		}
	}
	tw.Flush()
}

// healthText says an instance's health and why: "up", "down: L7STS 404
// for 12s", "up, drained", "up (last check L7TOUT ...)" when a check has
// failed but not enough of them yet.
func healthText(inst wire.InstanceStatus, now time.Time) string {
	h := "up"
	if !inst.Healthy {
		h = "down"
		if ck := inst.Check; ck != nil {
			h += ": " + printable(ck.Text)
		}
		if !inst.HealthSince.IsZero() {
			h += " for " + now.Sub(inst.HealthSince).Round(time.Second).String()
		}
	} else if ck := inst.Check; ck != nil && ck.Code != "L7OK" {
		h += " (last check " + printable(ck.Text) + ")"
	}
	if inst.Drained {
		h += ", drained"
	}
	return h
}

// certificatesText says which certificates a TLS listener serves and until
// when: "www.example.com, example.com until 2027-03-01 (84 days)"; one that
// expires within 14 days is flagged, one expired too.
func certificatesText(certs []wire.CertificateStatus, now time.Time) string {
	parts := make([]string, 0, len(certs))
	for _, c := range certs {
		names := make([]string, len(c.Names))
		for i, n := range c.Names {
			names[i] = printable(n)
		}
		left := c.NotAfter.Sub(now)
		when := fmt.Sprintf("until %s (%d days)", c.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
		switch {
		case left <= 0:
			when = "EXPIRED on " + c.NotAfter.UTC().Format(time.DateOnly)
		case left < 14*24*time.Hour:
			when += " EXPIRES SOON"
		}
		parts = append(parts, strings.Join(names, ", ")+" "+when)
	}
	return strings.Join(parts, "; ")
}
