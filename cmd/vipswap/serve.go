package main

import (
	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/node"
)

func newServeCmd() *cobra.Command {
	var path *string
	cmd := &cobra.Command{
		Use:   "serve [-c vipswap.yaml]",
		Short: "run the switch: listeners, health checks, admin API, managed instances",
		Long: `Runs vipswap on a configuration file (docs/configuration.md). SIGHUP reloads the
file; SIGTERM or Ctrl-C stops it gracefully (requests in flight finish,
managed instances stop); a second one stops it at once.`,
		Example: `  vipswap serve -c examples/quickstart.yaml
  vipswap check -c vipswap.yaml && vipswap serve -c vipswap.yaml`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(*path)
			if err != nil {
				return err
			}
			return node.Run(cmd.Context(), node.Setup{Path: *path, Config: cfg, Stderr: cmd.ErrOrStderr(), Version: version()})
		},
	}
	path = cmd.Flags().StringP("config", "c", "vipswap.yaml", "configuration file")
	return cmd
}
