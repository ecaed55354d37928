package node

import (
	"fmt"
	"log/slog"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/control"
	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/driver/azurelb"
)

// azureConn is how a driver reaches Azure for the block r.
func azureConn(r config.AzureResource) azure.Conn {
	return azure.Conn{SubscriptionID: r.Subscription, ResourceGroup: r.ResourceGroup, Endpoint: r.Endpoint,
		PollEvery: r.PollEvery, OperationTimeout: r.OperationTimeout}
}

// azureConfirm is how a driver confirms a switch at the VIP.
func azureConfirm(c config.AzureConfirm) azure.Confirm {
	return azure.Confirm{URL: c.URL, Answers: c.Answers, Window: c.Window, Every: c.Every, Deadline: c.Deadline}
}

// azurePlane returns the Azure driver the configuration names, if any, as
// a remote data plane; only the node that leads (the holder of etcd's
// lease in a cluster) writes to Azure, the others wait to see its change.
func azurePlane(cfg *config.Config, leading func() bool, log *slog.Logger) (control.RemotePlane, error) {
	switch {
	case cfg.AzureLB != nil:
		a := cfg.AzureLB
		d, err := azurelb.New(azurelb.Options{
			Conn: azureConn(a.AzureResource), Name: a.Name, ProdProbe: a.Probes.Prod, StageProbe: a.Probes.Stage,
			Paths: a.Paths, Tag: a.Tag, TagValues: a.TagValues, Confirm: azureConfirm(a.Confirm),
			Leading: leading, Logger: log.With("dataplane", "azure_lb"),
		})
		if err != nil {
			return nil, fmt.Errorf("azure_lb: %w", err)
		}
		log.Info("driving an Azure load balancer", "what", d.Describe(), "confirm", a.Confirm.URL)
		return d, nil
	}
	return nil, nil
}
