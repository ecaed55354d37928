package node

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/driver/azureappgw"
	"github.com/vipswap/vipswap/driver/azurefd"
	"github.com/vipswap/vipswap/driver/azurelb"
	"github.com/vipswap/vipswap/health"
)

// azureConn is how a driver reaches Azure for the block r.
func azureConn(r config.AzureResource) azure.Conn {
	return azure.Conn{SubscriptionID: r.Subscription, ResourceGroup: r.ResourceGroup, Endpoint: r.Endpoint,
		PollEvery: r.PollEvery, OperationTimeout: r.OperationTimeout, RetryEvery: r.RetryEvery}
}

// azureConfirm is how a driver confirms a switch at the VIP.
func azureConfirm(c config.AzureConfirm) azure.Confirm {
	return azure.Confirm{URL: c.URL, Answers: c.Answers, Window: c.Window, Every: c.Every, Deadline: c.Deadline}
}

// azurePlane returns the Azure driver the configuration names, if any, as
// a remote data plane; only the node that leads (the holder of etcd's
// lease in a cluster) writes to Azure, the others wait to see its change.
//
// probe, when not nil, is the health in use instead of vipswap's own
// probes (azure_appgw.health: appgw).
func azurePlane(cfg *config.Config, leading func() bool, log *slog.Logger) (plane control.RemotePlane, probe func(context.Context, health.Target) health.Check, err error) {
	switch {
	case cfg.AzureLB != nil:
		a := cfg.AzureLB
		d, err := azurelb.New(azurelb.Options{
			Conn: azureConn(a.AzureResource), Name: a.Name, ProdProbe: a.Probes.Prod, StageProbe: a.Probes.Stage,
			Paths: a.Paths, Tag: a.Tag, TagValues: a.TagValues, Confirm: azureConfirm(a.Confirm),
			Leading: leading, Logger: log.With("dataplane", "azure_lb"),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("azure_lb: %w", err)
		}
		log.Info("driving an Azure load balancer", "what", d.Describe(), "confirm", a.Confirm.URL)
		return d, nil, nil
	case cfg.AzureAppGW != nil:
		a := cfg.AzureAppGW
		d, err := azureappgw.New(azureappgw.Options{
			Conn: azureConn(a.AzureResource), Name: a.Name, ProdRule: a.Rules.Prod, StageRule: a.Rules.Stage,
			Pools: a.Pools, Confirm: azureConfirm(a.Confirm), HealthEvery: a.HealthEvery,
			Leading: leading, Logger: log.With("dataplane", "azure_appgw"),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("azure_appgw: %w", err)
		}
		log.Info("driving an Azure application gateway", "what", d.Describe(), "confirm", a.Confirm.URL, "health", a.Health)
		if a.Health == "appgw" {
			return d, d.Probe, nil
		}
		return d, nil, nil
	case cfg.AzureFrontDoor != nil:
		a := cfg.AzureFrontDoor
		d, err := azurefd.New(azurefd.Options{
			Conn: azureConn(a.AzureResource), Profile: a.Profile, OriginGroup: a.OriginGroup, Origins: a.Origins,
			Confirm: azureConfirm(a.Confirm), Leading: leading, Logger: log.With("dataplane", "azure_frontdoor"),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("azure_frontdoor: %w", err)
		}
		log.Info("driving Azure Front Door", "what", d.Describe(), "confirm", a.Confirm.URL)
		return d, nil, nil
	}
	return nil, nil, nil
}
