package node

import (
	"log/slog"
	"testing"

	"github.com/vipswap/vipswap/config"
)

// TestPerClientCapOption: proxy.max_connections_per_client reaches the
// data plane, never above half the listener's limit, and 0 turns it off.
func TestPerClientCapOption(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct{ maxConns, perClient, want int }{
		{1000, 256, 256},
		{100, 256, 50},
		{100, 10, 10},
		{100, 0, 0},
		{1, 256, 1},
	} {
		cfg := config.Default()
		cfg.Proxy.MaxConnections, cfg.Proxy.MaxConnectionsPerClient = c.maxConns, c.perClient
		o := proxyOptions(cfg, nil, log, nil)
		if o.MaxConns != c.maxConns || o.MaxConnsPerClient != c.want {
			t.Errorf("max_connections %d, max_connections_per_client %d: got %d and %d, want %d per client",
				c.maxConns, c.perClient, o.MaxConns, o.MaxConnsPerClient, c.want)
		}
	}
}
