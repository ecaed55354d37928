package proxy

import (
	"testing"
	"time"
)

func TestAffinityCookie(t *testing.T) {
	for _, c := range []struct {
		a    Affinity
		want string
	}{
		{Affinity{Cookie: "vipswap_slot"}, "vipswap_slot=green; Path=/; HttpOnly; SameSite=Lax"},
		{Affinity{Cookie: "s", MaxAge: time.Hour, Secure: true}, "s=green; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure"},
	} {
		if got := affinityCookie(c.a, "green"); got != c.want {
			t.Errorf("affinityCookie(%+v) = %q, want %q", c.a, got, c.want)
		}
	}
}
