package main

import (
	"fmt"
	"net"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vipswap/vipswap/slotapp/register"
)

func newRegisterCmd() *cobra.Command {
	var slot, addr, endpoints, prefix *string
	var ttl *time.Duration
	cmd := &cobra.Command{
		Use:   "register --slot NAME --addr HOST:PORT --etcd URLS",
		Short: "make an instance a member of a slot of a vipswap cluster, until stopped",
		Long: `For applications in any language: registers --addr as an instance of --slot with
every vipswap node whose state is in etcd (state.etcd), holds the registration (an
etcd lease of --ttl) while it runs, and deregisters on SIGTERM or Ctrl-C, so the nodes
stop sending it new requests at once. If it is killed, the lease expires after --ttl
and the nodes drop the instance then. vipswap probes a registered instance like any
other before it takes traffic. Run it beside the instance (in the same unit, or as
its parent), and stop it before the instance.`,
		Example: `  vipswap register --slot green --addr 127.0.0.1:9003 --etcd http://127.0.0.1:2379`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if *slot == "" || *addr == "" || *endpoints == "" {
				return &usageError{msg: "--slot, --addr and --etcd are required"}
			}
			if _, _, err := net.SplitHostPort(*addr); err != nil {
				return &usageError{msg: fmt.Sprintf("--addr: want host:port, got %q", *addr)}
			}
			if *ttl < 2*time.Second {
				return &usageError{msg: fmt.Sprintf("--ttl: want at least 2s, got %s", *ttl)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			reg, err := register.InstanceUnder(ctx, strings.Split(*endpoints, ","), *prefix, *slot, *addr, *ttl)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "registered %s in slot %s (lease %s); SIGTERM deregisters\n", *addr, *slot, *ttl)
			<-reg.Done()
			if err := reg.Err(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "deregistered %s from slot %s\n", *addr, *slot)
			return nil
		},
	}
	slot = cmd.Flags().String("slot", "", "the slot the instance belongs to (required)")
	addr = cmd.Flags().String("addr", "", "where the instance listens, host:port, as the nodes reach it (required)")
	endpoints = cmd.Flags().String("etcd", "", "etcd client URLs, comma-separated: state.etcd.endpoints (required)")
	prefix = cmd.Flags().String("prefix", "/vipswap/", "the cluster's state.etcd.prefix")
	ttl = cmd.Flags().Duration("ttl", 5*time.Second, "how long the registration outlives this process if it is killed")
	return cmd
}
