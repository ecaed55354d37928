package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/node"
)

func newServeCmd() *cobra.Command {
	var path *string
	var upgradeTimeout *time.Duration
	var pidFile *string
	cmd := &cobra.Command{
		Use:   "serve [-c vipswap.yaml]",
		Short: "run the switch: listeners, health checks, admin API, managed instances",
		Long: `Runs vipswap on a configuration file (docs/configuration.md). SIGHUP reloads the
file; SIGTERM or Ctrl-C stops it gracefully (requests in flight finish,
managed instances stop); a second one stops it at once. SIGUSR2 (or vipswap
upgrade) replaces it with a new process without dropping a connection.`,
		Example: `  vipswap serve -c examples/quickstart.yaml
  vipswap check -c vipswap.yaml && vipswap serve -c vipswap.yaml`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if *upgradeTimeout <= 0 || *upgradeTimeout > node.MaxUpgradeTimeout {
				return &usageError{msg: fmt.Sprintf("--upgrade-timeout: %s is not between 0 and %s", *upgradeTimeout, node.MaxUpgradeTimeout)}
			}
			cfg, err := config.Load(*path)
			if err != nil {
				return err
			}
			return node.Run(cmd.Context(), node.Setup{Path: *path, Config: cfg, Stderr: cmd.ErrOrStderr(), Version: version(),
				Upgrades: true, UpgradeTimeout: *upgradeTimeout, PIDFile: *pidFile})
		},
	}
	path = cmd.Flags().StringP("config", "c", "vipswap.yaml", "configuration file")
	upgradeTimeout = cmd.Flags().Duration("upgrade-timeout", node.DefaultUpgradeTimeout,
		fmt.Sprintf("how long a new process may take to become ready on an upgrade (at most %s)", node.MaxUpgradeTimeout))
	pidFile = cmd.Flags().String("pid-file", "", "write the PID of the process that serves to this file (the new one's after an upgrade)")
	return cmd
}
