package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

func newReloadCmd() *cobra.Command {
	var admin, reason *string
	var dryRun, force, asJSON *bool
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "make a running vipswap re-read its configuration file and apply what changed",
		Long: `The running vipswap re-reads the file it was started with (as SIGHUP does),
validates it and applies what changed without a failed request: instances
added and removed, slots added and removed (not one that takes traffic),
health, timeouts, measurement and log settings. An invalid file, a file that
changed while it was read, or a change that needs a restart (listen
addresses, the state file, the admin API, a run: slot's command), changes
nothing and says why. So does a file that would leave a slot taking prod
traffic (the active slot, one with a share of prod, one a route sends to)
without a routable instance: one that keeps none of its healthy instances
(a new address takes traffic only once its probe passes), unless --force.
Every reload is recorded in the history.`,
		Example: `  vipswap check -c vipswap.yaml && vipswap reload --reason "add 127.0.0.1:9003"
  vipswap reload --dry-run                 # what would change
  vipswap reload --force                   # even if prod is left without an instance`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n := len(*reason); n > api.MaxReason {
				return &usageError{msg: fmt.Sprintf("--reason: %d bytes, at most %d are allowed", n, api.MaxReason)}
			}
			res, err := newClient(*admin).Reload(cmd.Context(), wire.ChangeRequest{Reason: *reason, DryRun: *dryRun, Force: *force})
			if err != nil {
				return err
			}
			return printReload(cmd.OutOrStdout(), res, *asJSON)
		},
	}
	admin = adminFlag(cmd.Flags())
	reason = cmd.Flags().String("reason", "", "why, recorded in the history (at most 1 KiB)")
	dryRun = cmd.Flags().Bool("dry-run", false, "report what would change and change nothing")
	force = cmd.Flags().Bool("force", false, "apply even if a slot that takes prod traffic is left without a routable instance")
	asJSON = cmd.Flags().Bool("json", false, "print the result as JSON")
	return cmd
}

func printReload(w io.Writer, res wire.Change, asJSON bool) error {
	if asJSON {
		return writeJSON(w, res)
	}
	switch {
	case res.Refused != "":
		return fmt.Errorf("would be refused: %s", refusedWhy(res.Refused))
	case res.DryRun && len(res.Changes) == 0:
		fmt.Fprintln(w, "dry run: the file changes nothing")
	case res.DryRun:
		fmt.Fprintln(w, "dry run: the file would change:")
	case len(res.Changes) == 0:
		fmt.Fprintf(w, "reloaded: nothing changed (history entry %d)\n", res.HistoryID)
	default:
		fmt.Fprintf(w, "reloaded (revision %d, history entry %d):\n", res.Revision, res.HistoryID)
	}
	for _, c := range res.Changes {
		fmt.Fprintf(w, "  %s\n", printable(c))
	}
	for _, c := range res.Warnings {
		fmt.Fprintf(w, "warning: %s\n", printable(c))
	}
	return nil
}
