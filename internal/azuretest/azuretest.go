// Package azuretest sets up the Azure drivers' tests: how a driver reaches
// the stand-in ARM server, and a VIP in front of real blue and green
// sample apps that follows what the stand-in's resources say.
package azuretest

import (
	"testing"
	"time"

	"github.com/vipswap/vipswap/driver/azure"
	"github.com/vipswap/vipswap/driver/azure/armstandin"
	"github.com/vipswap/vipswap/internal/vstest"
)

// Conn is how a driver reaches arm for resource group rg: with the
// stand-in's credential and a client that trusts its certificate,
// polling every 100ms, one write bounded at 30s.
func Conn(arm *armstandin.Server, rg string) azure.Conn {
	return azure.Conn{SubscriptionID: armstandin.Sub, ResourceGroup: rg, Endpoint: arm.URL(),
		Credential: armstandin.Credential{}, Transport: arm.TLS.Client(), PollEvery: 100 * time.Millisecond,
		OperationTimeout: 30 * time.Second}
}

// StartVIP starts a blue and a green sample app (the test's package calls
// vstest.Main) and arm's VIP in front of them, which sends to the slots
// route reads from arm, delay after each write; it is closed when the
// test ends.
func StartVIP(t testing.TB, arm *armstandin.Server, delay time.Duration, route func(*armstandin.Server) map[string]int) *armstandin.VIP {
	t.Helper()
	blue := vstest.StartApp(t, "blue", "127.0.0.1:0")
	green := vstest.StartApp(t, "green", "127.0.0.1:0")
	vip := arm.NewVIP(map[string]string{"blue": "http://" + blue.Addr, "green": "http://" + green.Addr}, delay, route)
	t.Cleanup(vip.Close)
	return vip
}
