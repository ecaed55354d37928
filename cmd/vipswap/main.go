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
)

const usage = `usage: vipswap <command> [flags]

commands:
  serve   [-c vipswap.yaml]                    run the switch
  status  [--admin URL] [--json]               slots, instances, health, active slot
  swap    [--admin URL] [--force] [--wait]     swap prod and stage
  app     --listen ADDR --slot NAME [--version V]   the sample application

--admin defaults to $VIPSWAP_ADMIN, then http://127.0.0.1:9090.
Run "vipswap <command> -h" for a command's flags.
`

// exit codes
const (
	exitOK      = 0
	exitFailed  = 1 // refused or failed
	exitUsage   = 2
	defaultAddr = "http://127.0.0.1:9090"
)

// usageError marks errors in how the command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

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
		"swap":   swapCmd,
		"app":    appCmd,
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "vipswap: unknown command %q (want serve, status, swap or app)\n", name)
		return exitUsage
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vipswap %s: %s\n", name, ue.msg)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "vipswap %s: %s\n", name, oneLine(err))
		return exitFailed
	}
}

// oneLine keeps multi-problem errors (config validation) readable: the first
// problem on the command's line, the others indented below it.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "\n  ")
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// adminFlag registers --admin with its documented default.
func adminFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("VIPSWAP_ADMIN")
	if def == "" {
		def = defaultAddr
	}
	return fs.String("admin", def, "admin API URL ($VIPSWAP_ADMIN)")
}
