package node

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/api"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/wire"
)

// An upgrade to a binary the request names, through an admin API that is
// not on loopback, is refused (403, naming admin.allow_run) unless the
// configuration allows running commands: the API must not run whatever
// file a caller names. (The whole upgrade, which needs a process of its
// own, is tested in cmd/vipswap.)
func TestUpgradeToAnotherBinaryNeedsAllowRun(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		listen   string
		allowRun bool
		binary   string
		refused  bool
	}{
		{"0.0.0.0:9090", false, exe, true},
		{"[::]:9090", false, exe, true},
		{"10.1.2.3:9090", false, exe, true},
		{"0.0.0.0:9090", true, exe, false},
		{"127.0.0.1:9090", false, exe, false},
		{"[::1]:9090", false, exe, false},
		{"0.0.0.0:9090", false, "", false}, // the file this process started as
	} {
		cfg := &config.Config{Admin: config.Admin{Listen: c.listen, AllowRun: c.allowRun}}
		// upgraded is closed: an upgrade that gets past the check stops at
		// the next one ("replaced already"), before anything moves.
		n := &node{initial: cfg, cfg: cfg, ho: &handover{upgraded: make(chan struct{})}}
		close(n.ho.upgraded)
		_, err := n.upgrade(context.Background(), wire.UpgradeRequest{Binary: c.binary})
		var ae *api.Error
		if !errors.As(err, &ae) {
			t.Fatalf("%+v: %v is no API error", c, err)
		}
		refused := ae.Status == http.StatusForbidden && strings.Contains(err.Error(), "admin.allow_run")
		if refused != c.refused {
			t.Errorf("admin on %s, allow_run %v, binary %q: %d %v; want refused=%v", c.listen, c.allowRun, c.binary, ae.Status, err, c.refused)
		}
	}
}
