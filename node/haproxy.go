package node

import (
	"log/slog"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/driver/haproxy"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// haproxyPlane is the HAProxy driver as the controller's remote data
// plane.
type haproxyPlane struct {
	*haproxy.Driver
	name string
}

// newHAProxyPlane starts driving the HAProxy cfg names.
func newHAProxyPlane(cfg *config.HAProxy, log *slog.Logger) *haproxyPlane {
	d := haproxy.New(haproxy.Options{
		Runtime:  haproxy.Runtime{Addr: cfg.Socket, Timeout: cfg.Timeout},
		Maps:     [len(route.Listeners)]string{route.Prod: cfg.Maps.Prod, route.Stage: cfg.Maps.Stage},
		Backends: cfg.Backends,
		Check:    cfg.Health == "haproxy",
		Interval: cfg.Interval,
		Logger:   log.With("dataplane", "haproxy"),
	})
	log.Info("driving HAProxy", "socket", cfg.Socket, "prod_map", cfg.Maps.Prod, "stage_map", cfg.Maps.Stage, "health", cfg.Health)
	return &haproxyPlane{Driver: d, name: "haproxy " + cfg.Socket}
}

// PlaneStatus implements control.RemotePlane.
func (p *haproxyPlane) PlaneStatus() wire.PlaneStatus {
	s := p.Status()
	return wire.PlaneStatus{Name: p.name, Revision: s.Revision, Applied: s.Applied, Error: s.Error,
		ConvergedSeconds: s.Converged.Seconds(), Reapplied: s.Reapplied, Since: s.Since}
}
