package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/config"
)

func newCheckCmd() *cobra.Command {
	var path *string
	cmd := &cobra.Command{
		Use:   "check [-c vipswap.yaml]",
		Short: "validate a configuration file without starting anything",
		Long: `Reads and validates the configuration as serve and reload would, and its token
file: every problem is reported with its file, line and key. Exit 0 when it is
valid, 1 when it is not. Like haproxy -c or caddy validate.`,
		Example: `  vipswap check -c vipswap.yaml && systemctl reload vipswap`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			return checkConfig(cmd.OutOrStdout(), *path)
		},
	}
	path = cmd.Flags().StringP("config", "c", "vipswap.yaml", "configuration file")
	return cmd
}

func checkConfig(w io.Writer, path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	if cfg.Admin.TokenFile != "" {
		if _, err := api.LoadTokens(cfg.Admin.TokenFile); err != nil {
			return err
		}
	}
	if cfg.Affinity.KeyFile != "" {
		if _, err := config.LoadAffinityKey(cfg.Affinity.KeyFile); err != nil {
			return err
		}
	}
	for i, l := range []config.Listener{cfg.Listeners.Prod, cfg.Listeners.Stage} {
		if l.TLS != nil {
			if _, err := config.LoadCertificates([]string{"listeners.prod", "listeners.stage"}[i], l.TLS); err != nil {
				return err
			}
			if _, err := config.LoadACMERoots([]string{"listeners.prod", "listeners.stage"}[i], l.TLS.ACME); err != nil {
				return err
			}
		}
	}
	if cfg.Admin.TLS != nil {
		if _, err := config.LoadCertificates("admin", cfg.Admin.TLS); err != nil {
			return err
		}
	}
	if _, err := config.LoadUpstreams(cfg); err != nil {
		return err
	}
	var slots []string
	for _, name := range cfg.SlotOrder {
		s := cfg.Slots[name]
		n := len(s.Instances)
		kind := "instances"
		if s.Run != nil {
			n, kind = s.Run.Replicas, "managed instances"
		}
		switch {
		case s.Protocol == config.ProtocolH2:
			kind += ", HTTP/2 over TLS"
		case s.Protocol == config.ProtocolH2C:
			kind += ", h2c"
		case s.TLS != nil:
			kind += ", HTTPS"
		}
		slots = append(slots, fmt.Sprintf("%s (%d %s)", name, n, kind))
	}
	fmt.Fprintf(w, "%s: valid\n  listeners: prod %s, stage %s; admin %s\n  slots: %s\n  state: %s\n",
		path, cfg.Listeners.Prod, cfg.Listeners.Stage, cfg.Admin.Listen, strings.Join(slots, ", "), stateWhere(cfg))
	if line := azureWhat(cfg); line != "" {
		fmt.Fprintf(w, "  %s\n", line)
	}
	for _, warning := range cfg.UnlistedRouteSlots() {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
	return nil
}

// stateWhere says where the configuration keeps the state.
func stateWhere(cfg *config.Config) string {
	if e := cfg.State.Etcd; e != nil {
		return fmt.Sprintf("etcd %s, prefix %s (local copy %s)", strings.Join(e.Endpoints, ","), e.Prefix, e.LocalCopy)
	}
	return cfg.State.Path
}

// azureWhat names the Azure resource the configuration drives, or "".
func azureWhat(cfg *config.Config) string {
	confirm := func(c config.AzureConfirm) string {
		if c.URL == "" {
			return "switches not confirmed at the VIP (no confirm.url)"
		}
		return "switches confirmed at " + c.URL
	}
	switch {
	case cfg.AzureLB != nil:
		a := cfg.AzureLB
		return fmt.Sprintf("azure_lb: load balancer %s in %s/%s, probes %s and %s; %s", a.Name, a.Subscription, a.ResourceGroup, a.Probes.Prod, a.Probes.Stage, confirm(a.Confirm))
	case cfg.AzureAppGW != nil:
		a := cfg.AzureAppGW
		return fmt.Sprintf("azure_appgw: application gateway %s in %s/%s, rules %s and %q; %s", a.Name, a.Subscription, a.ResourceGroup, a.Rules.Prod, a.Rules.Stage, confirm(a.Confirm))
	case cfg.AzureFrontDoor != nil:
		a := cfg.AzureFrontDoor
		return fmt.Sprintf("azure_frontdoor: origin group %s of profile %s in %s/%s; %s", a.OriginGroup, a.Profile, a.Subscription, a.ResourceGroup, confirm(a.Confirm))
	}
	return ""
}
