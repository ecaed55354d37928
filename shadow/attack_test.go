package shadow_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vipswap/vipswap/proxy"
	"github.com/vipswap/vipswap/shadow"
)

// headerEcho answers with the request's header fields as JSON (but the
// shadow's mark and Via, which name the hop), as an application that
// builds links from X-Forwarded-Host or trusts X-Forwarded-Proto would.
func headerEcho(w http.ResponseWriter, r *http.Request) {
	h := map[string]string{}
	for k, vv := range r.Header {
		if k == proxy.ShadowHeader || k == "Via" {
			continue
		}
		h[k] = strings.Join(vv, ", ")
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(h)
}

// TestCopiesCarryTheHeaderProdsInstanceGot: a client's X-Forwarded-Host
// and X-Forwarded-Proto, a field its Connection header names, the pin
// header spelt with underscores: prod's instance never sees them as the
// client sent them, and neither may the copy (what a client sends is a
// claim); and X-Forwarded-For is the same chain on both sides. An
// application that echoes its request header answers a copy as it
// answered the original.
func TestCopiesCarryTheHeaderProdsInstanceGot(t *testing.T) {
	green := httptest.NewServer(http.HandlerFunc(headerEcho))
	t.Cleanup(green.Close)
	r := newRig(t, headerEcho, green.Listener.Addr().String(), shadow.Options{PinHeader: "X-Vipswap-Slot", AffinityCookie: "vipswap_slot"})
	r.start(100, []string{"GET"})
	const n = 5
	failed := r.load(t, n, 1, 200, func(i int) *http.Request {
		req := r.get("/api/test")(i)
		req.Header.Set("X-Forwarded-Host", "attacker.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-For", "10.9.8.7")
		req.Header.Set("Connection", "X-Secret")
		req.Header.Set("X-Secret", "hop only")
		req.Header["X_Vipswap_Slot"] = []string{"blue"}
		return req
	})
	if failed != 0 {
		t.Fatalf("%d prod requests failed, want 0", failed)
	}
	f := r.settled(t, n)
	if f.Same != n || f.Differ != 0 {
		t.Errorf("same %d, differ %d, want %d and 0: the copy's header is not prod's (samples %+v)", f.Same, f.Differ, n, f.Samples)
	}
}
