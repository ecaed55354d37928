// Command vipswap is the traffic switch for blue/green deployments: it runs
// the switch (serve), reports and changes its state (status, swap), and ships
// a sample application (app). Run "vipswap help" for usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vipswap/vipswap/client"
)

const usage = `usage: vipswap <command> [flags]

commands:
  serve     [-c vipswap.yaml]                       run the switch
  status    [--json | --watch]                      slots, instances, health, active slot; --watch: live, with rates
  swap      [--force] [--wait] [--dry-run] [--reason R]   swap prod and stage
  rollback  [--force] [--wait] [--dry-run] [--reason R]   back to the slot active before the last swap
  drain     SLOT ADDR [--force] [--wait] [--reason R]     stop sending new requests to an instance
  ready     SLOT ADDR [--reason R]                  put a drained instance back
  history   [--limit N] [--before ID] [--json]      every change, who made it and what it cost
  wait      drained SLOT [--timeout 30s]            block until a slot has no request in flight
  state     check|export|import|repair [-c vipswap.yaml | --file F]   the state file, with vipswap stopped
  app       --listen ADDR --slot NAME [--version V] the sample application

Every command but serve, state and app talks to the admin API: --admin
defaults to $VIPSWAP_ADMIN, then http://127.0.0.1:9090; the token comes from
$VIPSWAP_TOKEN. Exit codes: 0 done, 1 refused or failed, 2 usage error
(nothing was done), 3 timed out waiting (with --wait: the change itself
was applied).
Run "vipswap <command> -h" for a command's flags.
`

// exit codes
const (
	exitOK       = 0
	exitFailed   = 1 // refused or failed
	exitUsage    = 2 // the command line is wrong; nothing was done
	exitTimedOut = 3 // waited in vain; a change asked for was applied
	defaultAddr  = "http://127.0.0.1:9090"
)

// usageError marks errors in how the command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// timedOutError marks a wait that gave up (exit 3); for a change with
// --wait, the change itself was applied.
type timedOutError struct{ msg string }

func (e *timedOutError) Error() string { return e.msg }

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"serve":  serveCmd,
		"status": statusCmd,
		"swap": func(ctx context.Context, a []string, o, e io.Writer) error {
			return slotChangeCmd(ctx, "swap", a, o, e)
		},
		"rollback": func(ctx context.Context, a []string, o, e io.Writer) error {
			return slotChangeCmd(ctx, "rollback", a, o, e)
		},
		"drain":   drainCmd,
		"ready":   readyCmd,
		"history": historyCmd,
		"wait":    waitCmd,
		"state":   stateCmd,
		"app":     appCmd,
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "vipswap: unknown command %q (run vipswap help)\n", name)
		return exitUsage
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	var ue *usageError
	var te *timedOutError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vipswap %s: %s\n", name, printable(ue.msg))
		return exitUsage
	case errors.As(err, &te):
		fmt.Fprintf(stderr, "vipswap %s: %s\n", name, printable(te.msg))
		return exitTimedOut
	default:
		fmt.Fprintf(stderr, "vipswap %s: %s\n", name, oneLine(err))
		return exitFailed
	}
}

// oneLine keeps multi-problem errors (config validation) readable: the first
// problem on the command's line, the others indented below it. Text from the
// API is shown with its control characters escaped.
func oneLine(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n  ")
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vipswap "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args, turning flag errors and stray arguments into usage
// errors. The flag package has already printed the details.
func parse(fs *flag.FlagSet, args []string) error {
	_, err := parseArgs(fs, args)
	return err
}

// parseArgs parses args with flags before, between or after the positional
// arguments, which must be exactly names (for the usage message).
func parseArgs(fs *flag.FlagSet, args []string, names ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{msg: err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(pos) > len(names):
		return nil, &usageError{msg: fmt.Sprintf("unexpected argument %q", pos[len(names)])}
	case len(pos) < len(names):
		return nil, &usageError{msg: fmt.Sprintf("missing %s", strings.Join(names[len(pos):], " and "))}
	}
	return pos, nil
}

// adminFlag registers --admin with its documented default.
func adminFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("VIPSWAP_ADMIN")
	if def == "" {
		def = defaultAddr
	}
	return fs.String("admin", def, "admin API URL ($VIPSWAP_ADMIN)")
}

// newClient returns a client of the admin API at admin, with the token from
// $VIPSWAP_TOKEN.
func newClient(admin string) *client.Client {
	return client.New(admin, client.WithToken(os.Getenv("VIPSWAP_TOKEN")))
}
