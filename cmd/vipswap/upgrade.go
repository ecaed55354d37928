package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/wire"
)

func newUpgradeCmd() *cobra.Command {
	var admin, reason, binary *string
	var dryRun, asJSON *bool
	cmd := &cobra.Command{
		Use:   "upgrade [--binary PATH]",
		Short: "replace the running vipswap with a new binary without dropping a connection",
		Long: `The running vipswap starts the new binary (by default the file it was started
as, so a package that replaced it is picked up; --binary names another, by
absolute path) and hands it every listening socket. The new process loads
the state, runs a first round of health checks and applies its routing before
it accepts a connection; then the old one stops accepting, finishes its
requests in flight (up to proxy.shutdown_timeout) and exits. A new binary
that exits or does not become ready in time is stopped, the old one goes on
serving, and this command says why and exits 1. SIGUSR2 to the vipswap
process does the same as upgrade without --binary.`,
		Example: `  vipswap upgrade                                  # the file vipswap was started as
  vipswap upgrade --binary /opt/vipswap/2.5/vipswap --reason "2.5"`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n := len(*reason); n > api.MaxReason {
				return &usageError{msg: fmt.Sprintf("--reason: %d bytes, at most %d are allowed", n, api.MaxReason)}
			}
			res, err := newClient(*admin).Upgrade(cmd.Context(), wire.UpgradeRequest{
				ChangeRequest: wire.ChangeRequest{Reason: *reason, DryRun: *dryRun},
				Binary:        *binary,
			})
			if err != nil {
				return fmt.Errorf("upgrade failed: %w", err)
			}
			return printUpgrade(cmd.OutOrStdout(), res, *dryRun, *asJSON)
		},
	}
	admin = adminFlag(cmd.Flags())
	binary = cmd.Flags().String("binary", "", "absolute path of the vipswap to start (default: the file the running one was started as)")
	reason = cmd.Flags().String("reason", "", "why, recorded in the history (at most 1 KiB)")
	dryRun = cmd.Flags().Bool("dry-run", false, "check the binary (it runs and says its version) and change nothing")
	asJSON = cmd.Flags().Bool("json", false, "print the result as JSON")
	return cmd
}

func printUpgrade(w io.Writer, res wire.UpgradeResult, dryRun, asJSON bool) error {
	if asJSON {
		return writeJSON(w, res)
	}
	if dryRun {
		fmt.Fprintf(w, "dry run: would upgrade from %s to %s (%s)\n", printable(res.OldVersion), printable(res.NewVersion), printable(res.Binary))
		return nil
	}
	fmt.Fprintf(w, "upgraded from %s to %s (%s), ready in %s; the old process (pid %d) finishes its requests in flight and exits\n",
		printable(res.OldVersion), printable(res.NewVersion), printable(res.Binary),
		(time.Duration(res.Seconds * float64(time.Second))).Round(time.Millisecond), res.OldPID)
	return nil
}
