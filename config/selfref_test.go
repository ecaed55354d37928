package config

import (
	"strings"
	"testing"
)

// TestInstanceCannotBeAListener (issue 10, point 6): an instance that is one
// of vipswap's own listeners, however spelled, is refused.
func TestInstanceCannotBeAListener(t *testing.T) {
	conf := func(prod, instance string) string {
		return strings.NewReplacer("PROD", prod, "INSTANCE", instance).Replace(`
listeners:
  prod: PROD
  stage: 127.0.0.1:8081
slots:
  blue:
    instances: ["INSTANCE"]
  green:
    instances: [127.0.0.1:9002]
`)
	}
	refused := []struct{ name, prod, instance, want string }{
		{"localhost for 127.0.0.1", "127.0.0.1:8080", "localhost:8080", "localhost:8080 is vipswap's own listeners.prod (127.0.0.1:8080)"},
		{"127.0.0.1 for localhost", "localhost:8080", "127.0.0.1:8080", "is vipswap's own listeners.prod"},
		{"loopback for a listener on every interface", ":8080", "127.0.0.1:8080", "is vipswap's own listeners.prod"},
		{"the admin address", "127.0.0.1:8080", "localhost:9090", "is vipswap's own admin.listen"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(conf(c.prod, c.instance)))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "slots.blue.instances[0]") {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	allowed := []struct{ name, prod, instance string }{
		{"another port", "127.0.0.1:8080", "localhost:8082"},
		{"another loopback address", "127.0.0.1:8080", "127.0.0.2:8080"},
		{"a name that does not resolve", "127.0.0.1:8080", "no-such-host.invalid:8080"},
	}
	for _, c := range allowed {
		t.Run("allows "+c.name, func(t *testing.T) {
			if _, err := Parse("t.yaml", []byte(conf(c.prod, c.instance))); err != nil {
				t.Fatal(err)
			}
		})
	}
}
