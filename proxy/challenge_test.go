package proxy

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vipswap/vipswap/route"
)

// TestChallenges: the ACME hook sees only GETs of
// /.well-known/acme-challenge/, before routing;
// what it declines (and everything else) routes as usual; it is kept
// across Reconfigure, and nil turns it off.
func TestChallenges(t *testing.T) {
	b := newInstance(t, "blue", "b1", nil)
	g := newInstance(t, "green", "g1", nil)
	p := New(Options{})
	p.Apply(table(1, []*route.Instance{b.inst}, []*route.Instance{g.inst}))
	prod, stage := serve(t, p)
	var seen atomic.Int64
	p.SetChallenges(func(w http.ResponseWriter, r *http.Request) bool {
		seen.Add(1)
		if r.URL.Path == "/.well-known/acme-challenge/pending" {
			io.WriteString(w, "key-authorization")
			return true
		}
		return false
	})
	p.Reconfigure(Options{})
	for _, c := range []struct{ method, url, want string }{
		{"GET", prod + "/.well-known/acme-challenge/pending", "key-authorization"},
		{"GET", stage + "/.well-known/acme-challenge/pending", "key-authorization"},
		{"GET", prod + "/.well-known/acme-challenge/other", "b1"},
		{"POST", prod + "/.well-known/acme-challenge/pending", "b1"},
		{"GET", prod + "/.well-known/acme-challengepending", "b1"},
		{"GET", prod + "/x/.well-known/acme-challenge/pending", "b1"},
	} {
		req, _ := http.NewRequest(c.method, c.url, strings.NewReader(""))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != c.want {
			t.Errorf("%s %s: %q, want %q", c.method, c.url, body, c.want)
		}
	}
	if got := seen.Load(); got != 3 {
		t.Errorf("the hook saw %d requests, want the 3 GETs of the path", got)
	}
	p.SetChallenges(nil)
	if _, body := get(t, prod+"/.well-known/acme-challenge/pending"); body != "b1" {
		t.Errorf("with the hook off: %q, want b1", body)
	}
}
