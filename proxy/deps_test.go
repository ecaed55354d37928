package proxy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDataPlaneImports keeps the request path free of the control plane: the
// proxy must not depend on the store, controller, API, config or health.
func TestDataPlaneImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"store", "control", "api", "config", "health"} {
			if dep == "github.com/vipswap/vipswap/"+banned || strings.HasPrefix(dep, "github.com/vipswap/vipswap/"+banned+"/") {
				t.Errorf("proxy depends on %s", dep)
			}
		}
	}
}
