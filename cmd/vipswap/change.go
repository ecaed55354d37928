package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/client"
	"github.com/vipswap/vipswap/wire"
)

// changeFlags are the flags every state-changing command shares.
type changeFlags struct {
	admin      *string
	force      *bool
	reason     *string
	dryRun     *bool
	ifRevision *uint64
	asJSON     *bool
	wait       *bool
	timeout    *time.Duration
	fs         *pflag.FlagSet
}

// changeFlagsOf registers the shared flags on fs; waitHelp, when set, adds
// --wait and --timeout.
func changeFlagsOf(fs *pflag.FlagSet, waitHelp string) *changeFlags {
	f := &changeFlags{
		admin:      adminFlag(fs),
		force:      fs.Bool("force", false, "apply even if a health check refuses it"),
		reason:     fs.String("reason", "", "why, recorded in the history (at most 1 KiB)"),
		dryRun:     fs.Bool("dry-run", false, "report what would happen and change nothing"),
		ifRevision: fs.Uint64("if-revision", 0, "apply only if the state is still at this revision"),
		asJSON:     fs.Bool("json", false, "print the result as JSON"),
		fs:         fs,
	}
	if waitHelp != "" {
		f.wait = fs.Bool("wait", false, waitHelp)
		f.timeout = fs.Duration("timeout", 30*time.Second, "with --wait: how long to wait")
	}
	return f
}

// check validates the flags before anything is sent, so a command line
// that cannot do what it says changes nothing (exit 2).
func (f *changeFlags) check() error {
	if f.timeout != nil && *f.timeout <= 0 {
		return &usageError{msg: fmt.Sprintf("--timeout: want a duration above zero, such as 30s, got %s", *f.timeout)}
	}
	if n := len(*f.reason); n > api.MaxReason {
		return &usageError{msg: fmt.Sprintf("--reason: %d bytes, at most %d are allowed", n, api.MaxReason)}
	}
	if f.fs.Changed("if-revision") && *f.ifRevision == 0 {
		return &usageError{msg: "--if-revision: revisions start at 1, got 0"}
	}
	if f.wait != nil && *f.wait && *f.dryRun {
		return &usageError{msg: "--wait and --dry-run do not go together: a dry run changes nothing to wait for"}
	}
	return nil
}

// applied turns a wait that failed after the change was applied into a
// timedOutError (exit 3) that says so, so a script does not apply it again.
func applied(res wire.Change, err error) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf("%s %s -> %s", res.Operation, res.From, res.To)
	if res.Instance != "" {
		what = res.Operation + " " + res.Instance
	}
	return &timedOutError{msg: fmt.Sprintf("%s applied (revision %d), but the wait gave up: %v", what, res.Revision, err)}
}

func (f *changeFlags) request() wire.ChangeRequest {
	req := wire.ChangeRequest{Force: *f.force, Reason: *f.reason, DryRun: *f.dryRun}
	if f.fs.Changed("if-revision") {
		req.IfRevision = f.ifRevision
	}
	return req
}

var slotChangeHelp = map[string][3]string{
	"swap": {"swap prod and stage: the standby slot becomes active",
		`The standby slot becomes active on prod, the active one moves to stage, in one
atomic change. Requests in flight on the old active slot finish there. Refused
when the standby slot has no routable instance (healthy and not drained),
unless --force.`,
		`  vipswap swap
  vipswap swap --wait --reason "release 2.4"      # and print what it cost
  vipswap swap --dry-run                          # would it be refused?
  vipswap swap --if-revision 7                    # only if nothing changed since`},
	"rollback": {"make the slot that was active before the last swap active again",
		`Returns prod to the previous slot (the one a swap or rollback moved away
from). Refused when nothing was swapped yet, or when that slot has no routable
instance, unless --force.`,
		`  vipswap rollback --reason "errors after 2.4"
  vipswap rollback --wait`},
}

// newSlotChangeCmd returns swap or rollback.
func newSlotChangeCmd(op string) *cobra.Command {
	var f *changeFlags
	h := slotChangeHelp[op]
	cmd := &cobra.Command{
		Use: op, Short: h[0], Long: h[1], Example: h[2], Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return slotChange(cmd.Context(), op, f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f = changeFlagsOf(cmd.Flags(), "return once the old active slot has drained, and print what it cost")
	return cmd
}

// slotChange runs swap or rollback.
func slotChange(ctx context.Context, op string, f *changeFlags, stdout, stderr io.Writer) error {
	if err := f.check(); err != nil {
		return err
	}
	c := newClient(*f.admin)
	call := c.Swap
	if op == "rollback" {
		call = c.Rollback
	}
	res, err := call(ctx, f.request())
	if err != nil {
		return err
	}
	if res.DryRun {
		return printDryRun(stdout, res, *f.asJSON)
	}
	if !*f.wait {
		return printChange(stdout, res, *f.asJSON)
	}
	verb := map[string]string{"swap": "swapped", "rollback": "rolled back"}[op]
	if !*f.asJSON {
		fmt.Fprintf(stdout, "%s %s -> %s (revision %d)\n", verb, res.From, res.To, res.Revision)
	}
	e, err := waitMeasured(ctx, c, res, *f.timeout, stderr)
	if err != nil {
		return applied(res, err)
	}
	if *f.asJSON {
		return writeJSON(stdout, e)
	}
	fmt.Fprintf(stdout, "%s %s→%s: %s\n", verb, e.From, e.To, describeMeasurement(e.Measurement))
	return nil
}

// describeMeasurement says what prod saw around a switch: "4,810 requests
// on prod in the 10.2 s around the switch, 0 failed, 0 instance errors
// (5xx), 0 client errors; drained in 0.0 s". Failed are the requests
// vipswap could not get answered; instance errors the 5xx the
// application answered; client errors the 4xx vipswap answered for the
// client's own mistake.
func describeMeasurement(m *wire.Measurement) string {
	if m.WindowSeconds == 0 { // recorded before windows were measured
		return fmt.Sprintf("%s during the switch, %s failed, drained in %.1f s", plural(int64(m.Served), "request"), thousands(m.Failed), m.DrainedSeconds)
	}
	prod := m.Listeners["prod"]
	nodes := ""
	if len(m.Nodes) > 0 {
		nodes = " over " + plural(int64(len(m.Nodes)), "node") + " so far"
	}
	return fmt.Sprintf("%s on prod%s in the %.1f s around the switch, %s; drained in %.1f s",
		plural(int64(prod.Requests), "request"), nodes, m.WindowSeconds, describeErrors(prod.Failed, prod.InstanceErrors, prod.ClientErrors), m.DrainedSeconds)
}

// describeServed says what prod served, under the names every summary
// uses: "5,567 requests, 0 failed, 557 instance errors (5xx), 0 client
// errors".
func describeServed(requests, failed, instanceErrors, clientErrors uint64) string {
	return plural(int64(requests), "request") + ", " + describeErrors(failed, instanceErrors, clientErrors)
}

// describeErrors says "0 failed, 557 instance errors (5xx), 0 client
// errors": the requests vipswap could not get answered, the 5xx the
// instances answered, the 4xx vipswap answered for clients' mistakes.
func describeErrors(failed, instanceErrors, clientErrors uint64) string {
	return fmt.Sprintf("%s failed, %s (5xx), %s", thousands(failed), plural(int64(instanceErrors), "instance error"), plural(int64(clientErrors), "client error"))
}

// waitMeasured waits until the history entry of res carries its measurement,
// printing the old slot's in-flight count about once a second. It waits on
// the admin API's events (the measurement's own wakes it at once), and
// reads the entry when one came or a second passed.
func waitMeasured(ctx context.Context, c *client.Client, res wire.Change, limit time.Duration, progress io.Writer) (wire.HistoryEntry, error) {
	var e wire.HistoryEntry
	// Taken before the first look: nothing is lost between them. An older
	// vipswap has no events: then next looks again in a while.
	seq, _ := c.LastEvent(ctx)
	next := func(ctx context.Context) {
		evs, err := c.Events(ctx, seq, time.Second)
		if err != nil {
			// An older vipswap, or a waiter too many: look again in a while.
			wait, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			<-wait.Done()
			cancel()
			return
		}
		seq = evs.Next
	}
	_, err := poll(ctx, limit, progress, res.From, next, func(ctx context.Context) (bool, int64, error) {
		var err error
		if e, err = c.Entry(ctx, res.HistoryID); err != nil {
			return false, -1, err
		}
		n := int64(-1)
		if e.Draining != nil {
			n = *e.Draining
		}
		return e.Measurement != nil, n, nil
	})
	if err == nil && !e.Measurement.Complete {
		err = fmt.Errorf("%s did not drain while vipswap measured it (%s in flight)", res.From, plural(slotInFlight(ctx, c, res.From), "request"))
	}
	return e, err
}

// everyTenth returns at the next tenth of a second, or when ctx ends: what
// waits on a counter (requests in flight) looks at it that often.
func everyTenth(ctx context.Context) {
	wait, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	<-wait.Done()
}

// poll calls check until it reports done, then again each time next
// returns, showing what's in-flight count: a redrawn line on a terminal,
// a line a second otherwise. It gives up after limit.
func poll(ctx context.Context, limit time.Duration, progress io.Writer, what string, next func(context.Context), check func(context.Context) (done bool, inFlight int64, err error)) (time.Duration, error) {
	start := time.Now()
	last := start
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	live := isTerminal(progress)
	if live {
		defer fmt.Fprint(progress, "\r\033[K") // leave the terminal clean
	}
	n := int64(-1)
	for {
		done, inFlight, err := check(ctx)
		if err != nil && ctx.Err() == nil {
			return 0, err
		}
		if err == nil {
			if done {
				return time.Since(start), nil
			}
			n = inFlight
		}
		if live || time.Since(last) >= time.Second {
			line := fmt.Sprintf("draining %s: %s in flight (%s)", what, plural(n, "request"), time.Since(start).Round(100*time.Millisecond))
			if n == 0 {
				line = fmt.Sprintf("%s drained; measuring the traffic around the switch (%s)", what, time.Since(start).Round(100*time.Millisecond))
			}
			if live {
				fmt.Fprintf(progress, "\r%s\033[K", line) // redraw one line
			} else {
				fmt.Fprintln(progress, line)
			}
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			// Say how many are in flight now, even if the last look was
			// cut short by the limit.
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if _, inFlight, err := check(last); err == nil {
				n = inFlight
			}
			cancel()
			return 0, &timedOutError{msg: fmt.Sprintf("%s still has %s in flight after %s", what, plural(n, "request"), limit)}
		default:
		}
		next(ctx)
	}
}

// isTerminal reports whether w is a terminal, where progress redraws one
// line instead of printing one per second.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// slotInFlight returns slot's prod requests in flight, or -1 if unknown.
func slotInFlight(ctx context.Context, c *client.Client, slot string) int64 {
	s, err := c.Status(ctx)
	if err != nil {
		return -1
	}
	for _, ss := range s.Slots {
		if ss.Name == slot {
			return ss.InFlight.Prod
		}
	}
	return -1
}

func newDrainCmd() *cobra.Command {
	var f *changeFlags
	cmd := &cobra.Command{
		Use:   "drain SLOT ADDR",
		Short: "stop sending new requests to one instance",
		Long: `The instance gets no new requests; those in flight finish. Health checks go
on. Refused when it is the last routable instance of the active or standby
slot, unless --force. "vipswap ready" puts it back.`,
		Example: `  vipswap drain blue 127.0.0.1:9001 --wait       # and wait until it has nothing in flight
  vipswap status                                  # the instance addresses`,
		Args: exactArgs("SLOT", "ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return drain(cmd.Context(), f, args[0], args[1], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f = changeFlagsOf(cmd.Flags(), "return once the instance has no request in flight")
	return cmd
}

func drain(ctx context.Context, f *changeFlags, slot, addr string, stdout, stderr io.Writer) error {
	if err := f.check(); err != nil {
		return err
	}
	c := newClient(*f.admin)
	res, err := c.Drain(ctx, slot, addr, f.request())
	if err != nil {
		return err
	}
	if res.DryRun {
		return printDryRun(stdout, res, *f.asJSON)
	}
	if err := printChange(stdout, res, *f.asJSON); err != nil || !*f.wait {
		return err
	}
	took, err := waitIdle(ctx, c, *f.timeout, stderr, res.Instance, func(s wire.Status) int64 {
		for _, ss := range s.Slots {
			for _, i := range ss.Instances {
				if ss.Name == slot && i.Addr == addr {
					return i.InFlight.Total()
				}
			}
		}
		return 0
	})
	if err != nil {
		return applied(res, err)
	}
	if !*f.asJSON {
		fmt.Fprintf(stdout, "%s drained in %.1f s\n", printable(res.Instance), took.Seconds())
	}
	return nil
}

func newReadyCmd() *cobra.Command {
	var f *changeFlags
	cmd := &cobra.Command{
		Use:     "ready SLOT ADDR",
		Short:   "put a drained instance back in rotation",
		Long:    "Undoes drain: the instance takes new requests again once it is healthy.",
		Example: "  vipswap ready blue 127.0.0.1:9001",
		Args:    exactArgs("SLOT", "ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			res, err := newClient(*f.admin).Ready(cmd.Context(), args[0], args[1], f.request())
			if err != nil {
				return err
			}
			if res.DryRun {
				return printDryRun(cmd.OutOrStdout(), res, *f.asJSON)
			}
			return printChange(cmd.OutOrStdout(), res, *f.asJSON)
		},
	}
	f = changeFlagsOf(cmd.Flags(), "")
	return cmd
}

// newWaitCmd is "vipswap wait drained SLOT": it blocks until SLOT has no
// request in flight on the listeners that no longer send it traffic.
func newWaitCmd() *cobra.Command {
	var admin *string
	var timeout *time.Duration
	var allowActive *bool
	cmd := &cobra.Command{
		Use:   "wait drained SLOT",
		Short: "block until a slot that takes no more traffic has nothing in flight",
		Long: `Waits until SLOT has no request in flight on the listeners that no longer send
it traffic: after a swap, "wait drained blue" returns once the old active slot
has finished its requests. A slot that prod still sends traffic to never
drains: that is refused, unless --allow-active.`,
		Example: `  vipswap swap && vipswap wait drained blue --timeout 2m`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) >= 2 && args[0] != "drained":
				return &usageError{msg: fmt.Sprintf("unknown sub-verb %q: did you mean vipswap wait drained %s?", args[0], args[1])}
			case len(args) == 1 && args[0] != "drained" && (strings.HasPrefix("drained", args[0]) || strings.HasPrefix(args[0], "drain")):
				return &usageError{msg: fmt.Sprintf("unknown sub-verb %q: did you mean vipswap wait drained SLOT?", args[0])}
			case len(args) == 1 && args[0] != "drained":
				return &usageError{msg: fmt.Sprintf("the word drained is missing: vipswap wait drained %s", args[0])}
			}
			return exactArgs("drained", "SLOT")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return waitDrained(cmd.Context(), newClient(*admin), args[1], *timeout, *allowActive, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	admin = adminFlag(cmd.Flags())
	timeout = cmd.Flags().Duration("timeout", 30*time.Second, "how long to wait")
	allowActive = cmd.Flags().Bool("allow-active", false, "wait even though prod sends the slot traffic (until a moment with nothing in flight)")
	return cmd
}

func waitDrained(ctx context.Context, c *client.Client, slot string, timeout time.Duration, allowActive bool, stdout, stderr io.Writer) error {
	if timeout <= 0 {
		return &usageError{msg: fmt.Sprintf("--timeout: want a duration above zero, such as 30s, got %s", timeout)}
	}
	s, err := c.Status(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, ss := range s.Slots {
		names = append(names, ss.Name)
	}
	if !slices.Contains(names, slot) {
		return fmt.Errorf("no slot %q (have %s)", slot, strings.Join(names, ", "))
	}
	if s.Active == slot && !allowActive {
		return fmt.Errorf("slot %s is active: prod still sends it traffic, so it does not drain (swap first, or --allow-active)", slot)
	}
	took, err := waitIdle(ctx, c, timeout, stderr, slot, func(s wire.Status) int64 {
		var n int64
		for _, ss := range s.Slots {
			if ss.Name != slot {
				continue
			}
			if s.Active != slot || allowActive {
				n += ss.InFlight.Prod
			}
			if s.Standby != slot {
				n += ss.InFlight.Stage
			}
		}
		return n
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s drained in %.1f s\n", slot, took.Seconds())
	return nil
}

// waitIdle polls the status until inFlight returns 0: requests in flight
// are a counter, not an event, so it reads them every tenth of a second.
func waitIdle(ctx context.Context, c *client.Client, limit time.Duration, progress io.Writer, what string, inFlight func(wire.Status) int64) (time.Duration, error) {
	return poll(ctx, limit, progress, what, everyTenth, func(ctx context.Context) (bool, int64, error) {
		s, err := c.Status(ctx)
		if err != nil {
			return false, -1, err
		}
		n := inFlight(s)
		return n == 0, n, nil
	})
}

func printChange(w io.Writer, res wire.Change, asJSON bool) error {
	if asJSON {
		return writeJSON(w, res)
	}
	switch {
	case !res.Applied:
		fmt.Fprintf(w, "nothing to do: %s %s is already in effect (revision %d)\n", res.Operation, printable(res.Instance), res.Revision)
	case res.Instance != "":
		fmt.Fprintf(w, "%s %s (revision %d)\n", past(res.Operation), printable(res.Instance), res.Revision)
	default:
		note := ""
		if res.Forced {
			note = " (forced: it had no routable instance: prod waits for one, up to proxy.hold, then answers 503)"
		}
		fmt.Fprintf(w, "%s %s -> %s (revision %d)%s\n", past(res.Operation), res.From, res.To, res.Revision, note)
	}
	printWarnings(w, res)
	return nil
}

// printWarnings says what an applied change may cost (a data plane that
// has not applied it yet).
func printWarnings(w io.Writer, res wire.Change) {
	for _, m := range res.Warnings {
		fmt.Fprintf(w, "warning: %s\n", printable(m))
	}
}

// printDryRun reports a dry run; one that would be refused is an error, so
// scripts can ask "would this work?" by exit code.
func printDryRun(w io.Writer, res wire.Change, asJSON bool) error {
	if res.InEffect && res.Refused == "" {
		if asJSON {
			return writeJSON(w, res)
		}
		what := strings.TrimSpace(res.Operation + " " + res.Instance)
		fmt.Fprintf(w, "dry run at revision %d: %s is already in effect; nothing would change\n", res.Revision, what)
		return nil
	}
	if asJSON {
		if err := writeJSON(w, res); err != nil {
			return err
		}
	} else {
		what := res.Operation + " " + res.Instance
		if res.Instance == "" {
			what = fmt.Sprintf("%s %s -> %s", res.Operation, res.From, res.To)
			if res.Refused != "" {
				what = res.Operation
			}
		}
		fmt.Fprintf(w, "dry run at revision %d: %s\n", res.Revision, what)
		if res.Instance == "" && res.Refused == "" {
			fmt.Fprintf(w, "  %s has %s routable; %s in flight on %s\n",
				res.To, plural(int64(res.TargetRoutable), "instance"), plural(res.InFlight, "request"), res.From)
		} else if res.Instance != "" {
			fmt.Fprintf(w, "  %s in flight on it\n", plural(res.InFlight, "request"))
		}
		for _, p := range res.Plan {
			fmt.Fprintf(w, "  %s\n", p)
		}
		if res.Refused == "" {
			fmt.Fprintln(w, "  would apply; nothing changed")
		}
	}
	if res.Refused != "" {
		return fmt.Errorf("would be refused: %s", refusedWhy(res.Refused))
	}
	return nil
}

func past(op string) string {
	switch op {
	case "swap":
		return "swapped"
	case "rollback":
		return "rolled back"
	}
	if op == "ready" {
		return "readied"
	}
	return op + "ed"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// plural returns "1 request" or "48,211 requests".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if n < 0 {
		return "? " + noun + "s"
	}
	return thousands(uint64(n)) + " " + noun + "s"
}

// thousands formats n with comma separators.
func thousands(n uint64) string {
	s := strconv.FormatUint(n, 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// refusedVerb is the "swap refused: " a refusal's reason starts with.
var refusedVerb = regexp.MustCompile(`^[a-z]+( [a-z]+)? refused: `)

// refusedWhy is a refusal's reason without its leading "swap refused: ",
// for a line that already says it would be refused.
func refusedWhy(reason string) string { return refusedVerb.ReplaceAllString(reason, "") }
