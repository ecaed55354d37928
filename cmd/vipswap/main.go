// Command vipswap is the traffic switch for blue/green deployments: it runs
// the switch (serve), reports and changes its state (status, swap, ...),
// checks and reloads its configuration, and ships a sample application
// (app). Run "vipswap help" for usage, "vipswap help VERB" for a verb's.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vipswap/vipswap/client"
)

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

const rootLong = `vipswap puts one stable address in front of slots of application instances
and moves traffic between them with zero failed requests.

Every verb but serve, check, state and app talks to a running vipswap's
admin API: --admin defaults to $VIPSWAP_ADMIN, then http://127.0.0.1:9090
(a bare host:port works too, over http); the token comes from $VIPSWAP_TOKEN.
An admin API over https (admin.tls) is named https://HOST:PORT; its
certificate is checked against the system's CAs, or those in the PEM file
$VIPSWAP_CA.

Exit codes: 0 done, 1 refused or failed, 2 usage error (nothing was done),
3 timed out waiting (with --wait: the change itself was applied).`

// unknownVerb is the usage error for a verb root does not have, with the
// verbs it most likely meant.
func unknownVerb(root *cobra.Command, verb string) error {
	msg := fmt.Sprintf("unknown command %q", verb)
	if s := root.SuggestionsFor(verb); len(s) > 0 {
		msg += fmt.Sprintf(": did you mean %s?", strings.Join(s, " or "))
	}
	return &usageError{msg: msg + " (run vipswap help)"}
}

// newHelpCmd is "vipswap help [VERB...]": the verb's help, or a usage
// error (exit 2) naming the verbs it may have meant.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [VERB]",
		Short: "help about any verb",
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			target, rest, err := root.Find(args)
			if err != nil || len(rest) > 0 || (target == root && len(args) > 0) {
				if target != nil && target != root && len(rest) > 0 {
					return &usageError{msg: fmt.Sprintf("%s has no %q (run vipswap help %s)", target.CommandPath(), rest[0], target.Name())}
				}
				return unknownVerb(root, args[0])
			}
			target.SetOut(cmd.OutOrStdout())
			return target.Help()
		},
	}
}

// newRoot returns the vipswap command with every verb.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "vipswap",
		Short:         "zero-downtime blue/green traffic switch",
		Long:          rootLong,
		Version:       version(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			return unknownVerb(cmd, args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(cmd.ErrOrStderr())
			cmd.Help()
			return &usageError{msg: "missing a verb (see above)"}
		},
	}
	root.SuggestionsMinimumDistance = 2
	root.SetVersionTemplate("vipswap {{.Version}}\n")
	root.SetFlagErrorFunc(flagError)
	root.SetHelpCommand(newHelpCmd())
	root.AddGroup(
		&cobra.Group{ID: "switch", Title: "Running the switch:"},
		&cobra.Group{ID: "change", Title: "Changing where traffic goes (admin API):"},
		&cobra.Group{ID: "look", Title: "Looking (admin API):"},
		&cobra.Group{ID: "tools", Title: "Tools:"},
	)
	for _, c := range []*cobra.Command{
		withGroup("switch", newServeCmd()), withGroup("switch", newCheckCmd()), withGroup("switch", newReloadCmd()), withGroup("switch", newUpgradeCmd()),
		withGroup("switch", newStateCmd()),
		withGroup("change", newSlotChangeCmd("swap")), withGroup("change", newSlotChangeCmd("rollback")),
		withGroup("change", newShiftCmd()), withGroup("change", newRolloutCmd()),
		withGroup("change", newPromoteCmd()), withGroup("change", newAbortCmd()),
		withGroup("change", newDrainCmd()), withGroup("change", newReadyCmd()),
		withGroup("change", newSlotCmd()), withGroup("change", newStageCmd()), withGroup("change", newRouteCmd()),
		withGroup("change", newDeployCmd()), withGroup("change", newRollingCmd()), withGroup("change", newShadowCmd()),
		withGroup("look", newStatusCmd()), withGroup("look", newHistoryCmd()), withGroup("look", newWaitCmd()),
		withGroup("tools", newAppCmd()), withGroup("tools", newVerifyCmd()), withGroup("tools", newRegisterCmd()), withGroup("tools", newVersionCmd()),
	} {
		root.AddCommand(c)
	}
	root.SetHelpCommandGroupID("tools")
	root.SetCompletionCommandGroupID("tools")
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		guardSubVerbs(c)
	}
	return root
}

// guardSubVerbs makes c, and every verb below it that has sub-verbs,
// refuse a sub-verb it does not have with a usage error naming the ones
// it most likely meant ("vipswap slot remov v3" must not print help and
// exit 0), and refuse a missing one.
func guardSubVerbs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		guardSubVerbs(sub)
	}
	if !c.HasSubCommands() {
		return
	}
	c.SuggestionsMinimumDistance = 2
	c.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		return unknownSubVerb(cmd, args[0])
	}
	if c.RunE == nil && c.Run == nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(cmd.ErrOrStderr())
			cmd.Help()
			return &usageError{msg: "missing a sub-verb (see above)"}
		}
	}
}

// unknownSubVerb is the usage error for a sub-verb parent does not have,
// with the ones it most likely meant.
func unknownSubVerb(parent *cobra.Command, verb string) error {
	msg := fmt.Sprintf("unknown sub-verb %q", verb)
	s := parent.SuggestionsFor(verb)
	if len(s) == 0 {
		for _, c := range parent.Commands() { // a prefix, however short: "stat" for status
			if c.IsAvailableCommand() && strings.HasPrefix(c.Name(), verb) {
				s = append(s, c.Name())
			}
		}
	}
	if len(s) > 0 {
		for i := range s {
			s[i] = parent.CommandPath() + " " + s[i]
		}
		msg += fmt.Sprintf(": did you mean %s?", strings.Join(s, " or "))
	}
	return &usageError{msg: msg + fmt.Sprintf(" (run vipswap help %s)", parent.Name())}
}

func withGroup(id string, c *cobra.Command) *cobra.Command {
	c.GroupID = id
	return c
}

// run executes one command line and returns the exit code. Errors are one
// line on stderr (a config's several problems, one per line below it).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	name := "vipswap"
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	}
	var ue *usageError
	var te *timedOutError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %s\n", name, printable(ue.msg))
		return exitUsage
	case strings.HasPrefix(err.Error(), "unknown command"):
		fmt.Fprintf(stderr, "vipswap: %s\n", unknownCommand(err))
		return exitUsage
	case errors.As(err, &te):
		fmt.Fprintf(stderr, "%s: %s\n", name, printable(te.msg))
		return exitTimedOut
	default:
		fmt.Fprintf(stderr, "%s: %s\n", name, oneLine(adminHint(err)))
		return exitFailed
	}
}

// unknownCommand turns cobra's several-line "unknown command ... Did you
// mean this?" into one line.
func unknownCommand(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	msg := strings.TrimSuffix(lines[0], ` for "vipswap"`)
	var suggest []string
	for _, l := range lines[1:] {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "Did you mean") {
			suggest = append(suggest, l)
		}
	}
	if len(suggest) > 0 {
		return fmt.Sprintf("%s: did you mean %s? (run vipswap help)", msg, strings.Join(suggest, " or "))
	}
	return msg + " (run vipswap help)"
}

// flagError turns a flag parsing error into one usage line with a hint:
// the flag a typo most likely meant, and where the verb's help is.
func flagError(cmd *cobra.Command, err error) error {
	if !cmd.HasParent() && len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		// "vipswap swpa --force": the verb is the mistake, not the flag.
		return unknownVerb(cmd, os.Args[1])
	}
	if cmd.HasSubCommands() {
		// "vipswap slot ad v3 --instances A": the sub-verb is the
		// mistake, not the flag.
		if verb := wordAfter(os.Args[1:], cmd); verb != "" {
			return unknownSubVerb(cmd, verb)
		}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "unknown flag: --"); ok {
		if s := closestFlag(cmd.Flags(), name); s != "" {
			msg = fmt.Sprintf("unknown flag --%s: did you mean --%s?", name, s)
		}
	}
	return &usageError{msg: fmt.Sprintf("%s (run %s --help)", msg, cmd.CommandPath())}
}

// wordAfter returns the first word of args after cmd's path that is not a
// flag, or "".
func wordAfter(args []string, cmd *cobra.Command) string {
	path := strings.Fields(cmd.CommandPath())[1:] // without "vipswap"
	i := 0
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "-"):
		case i < len(path) && a == path[i]:
			i++
		case i == len(path):
			return a
		}
	}
	return ""
}

// closestFlag returns the flag of fs nearest to name by edit distance, if
// near enough to be a typo.
func closestFlag(fs *pflag.FlagSet, name string) string {
	best, dist := "", 3
	fs.VisitAll(func(f *pflag.Flag) {
		if d := editDistance(name, f.Name); d < dist || (d <= 2 && strings.HasPrefix(f.Name, name) && best == "") {
			best, dist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
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

// adminHint adds what to do to the admin API errors a new user meets.
func adminHint(err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) {
		if strings.Contains(err.Error(), "cannot reach the admin API") {
			return fmt.Errorf("%w (is vipswap running? --admin or $VIPSWAP_ADMIN names its admin address, admin.listen in its configuration)", err)
		}
		return err
	}
	switch {
	case ce.StatusCode == 401 && os.Getenv("VIPSWAP_TOKEN") == "":
		return fmt.Errorf("%w: this vipswap wants a token: set VIPSWAP_TOKEN to a secret from its admin.token_file", err)
	case ce.StatusCode == 401:
		return fmt.Errorf("%w: VIPSWAP_TOKEN is not one of this vipswap's tokens (admin.token_file)", err)
	case ce.StatusCode == 403 && strings.Contains(ce.Message, "admin.hosts"):
		return err
	}
	return err
}

// adminFlag registers --admin with its documented default.
func adminFlag(fs *pflag.FlagSet) *string {
	def := os.Getenv("VIPSWAP_ADMIN")
	if def == "" {
		def = defaultAddr
	}
	return fs.String("admin", def, "admin API URL, or host:port ($VIPSWAP_ADMIN)")
}

// newClient returns a client of the admin API at admin (http:// is added
// to a bare host:port), with the token from $VIPSWAP_TOKEN.
func newClient(admin string) *client.Client {
	if _, err := strconv.Atoi(admin); err == nil {
		admin = "127.0.0.1:" + admin // a bare port
	}
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin
	}
	return client.New(admin, client.WithToken(os.Getenv("VIPSWAP_TOKEN")), client.WithCAFile(os.Getenv("VIPSWAP_CA")))
}

// exactArgs checks a verb's positional arguments, naming what is missing
// or extra.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) > len(names):
			return &usageError{msg: fmt.Sprintf("unexpected argument %q (usage: %s)", args[len(names)], cmd.UseLine())}
		case len(args) < len(names):
			return &usageError{msg: fmt.Sprintf("missing %s (usage: %s)", strings.Join(names[len(args):], " and "), cmd.UseLine())}
		}
		return nil
	}
}

// buildVersion, when set at build time (go build -ldflags "-X
// main.buildVersion=2.5.0"), is the version vipswap reports.
var buildVersion string

// version is the build's module version and commit.
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev != "" {
		v += " commit " + rev[:min(12, len(rev))] + modified
	}
	return v + " " + bi.GoVersion
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the build's version and commit",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "vipswap %s\n", version())
			return nil
		},
	}
}
