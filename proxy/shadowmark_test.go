package proxy

import (
	"strings"
	"testing"

	"github.com/vipswap/vipswap/route"
)

// A client cannot mark its request as a copy: the shadow's mark never
// reaches an instance from a client, in any spelling an application reads
// as it (CGI, WSGI and PHP read X_Vipswap_Shadow as X-Vipswap-Shadow),
// nor as a trailer. An application that skips side effects for copies
// would otherwise skip a real request's.
func TestAClientCannotMarkItsRequestAsACopy(t *testing.T) {
	blue := newInstance(t, "blue", "blue", headers)
	green := newInstance(t, "green", "green", headers)
	p := New(Options{})
	p.Apply(splitTable([]*route.Instance{blue.inst}, []*route.Instance{green.inst}))
	prod, stage := serve(t, p)
	for _, base := range []string{prod, stage} {
		for _, h := range []string{"X-Vipswap-Shadow: copy", "x-vipswap-shadow: copy", "X_Vipswap_Shadow: copy", "x_vipswap-SHADOW: copy"} {
			status, body := raw(t, base, "GET /x HTTP/1.1\r\nHost: x\r\n"+h+"\r\nConnection: close\r\n\r\n")
			if !strings.HasPrefix(status, "200") || strings.Contains(strings.ToLower(body), "shadow") {
				t.Errorf("%q on %s: %s %q; want 200 and no mark at the instance", h, base, status, body)
			}
		}
		status, body := raw(t, base, "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X_Vipswap_Shadow\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\nX_Vipswap_Shadow: copy\r\n\r\n")
		if !strings.HasPrefix(status, "200") || strings.Contains(strings.ToLower(body), "shadow") {
			t.Errorf("the mark as a trailer on %s: %s %q; want it kept from the instance", base, status, body)
		}
	}
}
