package config

import (
	"slices"
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	parse := func(s string) *Config {
		t.Helper()
		c, err := Parse("t.yaml", []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := parse(valid)
	t.Run("nothing", func(t *testing.T) {
		if d := old.Compare(parse(valid)); len(d.Changes) != 0 || len(d.Restart) != 0 {
			t.Fatalf("got %+v", d)
		}
	})
	t.Run("what a reload applies", func(t *testing.T) {
		next := strings.NewReplacer("interval: 500ms", "interval: 1s",
			"instances: [127.0.0.1:9001, 127.0.0.1:9002]", "instances: [127.0.0.1:9002, 127.0.0.1:9003]",
			"active: blue", "  red:\n    instances: [127.0.0.1:9010]\nlog:\n  level: debug\nproxy:\n  max_connections_per_client: 64\nactive: blue").Replace(valid)
		d := old.Compare(parse(next))
		want := []string{"health.interval: 500ms → 1s", "log.level: info → debug", "proxy.max_connections_per_client: 256 → 64",
			"slots.blue: +127.0.0.1:9003 -127.0.0.1:9001", "slots.red: added"}
		if !slices.Equal(d.Changes, want) || len(d.Restart) != 0 {
			t.Fatalf("got %+v, want changes %q and no restart", d, want)
		}
	})
	t.Run("blocks and lists read as in the file", func(t *testing.T) {
		withHAProxy := valid + "haproxy: {socket: /run/h.sock, maps: {prod: /p.map, stage: /s.map}}\n"
		if d := parse(withHAProxy).Compare(parse(withHAProxy)); len(d.Changes) != 0 {
			t.Fatalf("the same haproxy block compares as changed: %q", d.Changes)
		}
		next := withHAProxy + "routes: [{path_prefix: /api/2.0/, slot: green}]\n"
		d := parse(withHAProxy).Compare(parse(strings.Replace(next, "/run/h.sock", "/run/h2.sock", 1)))
		want := []string{"haproxy.socket: /run/h.sock → /run/h2.sock", "routes: [] → [{path_prefix: /api/2.0/, slot: green}]"}
		if !slices.Equal(d.Changes, want) {
			t.Fatalf("got changes %q, want %q", d.Changes, want)
		}
	})
	t.Run("values that would misread are quoted", func(t *testing.T) {
		next := valid + "routes: [{path_prefix: /api/2.0/, header: X-Beta, value: \"a, slot: blue}\", slot: green}, {path_prefix: /v1/, header: X-N, value: \"1\", slot: blue}]\n"
		d := old.Compare(parse(strings.Replace(next, "interval: 500ms", "interval: 5m", 1)))
		want := []string{"health.interval: 500ms → 5m",
			`routes: [] → [{path_prefix: /api/2.0/, header: X-Beta, value: "a, slot: blue}", slot: green}, {path_prefix: /v1/, header: X-N, value: "1", slot: blue}]`}
		if !slices.Equal(d.Changes, want) {
			t.Fatalf("got changes %q, want %q", d.Changes, want)
		}
	})
	t.Run("an added block lists its keys", func(t *testing.T) {
		d := old.Compare(parse(valid + "haproxy: {socket: /run/h.sock, maps: {prod: /p.map, stage: /s.map}}\n"))
		for _, c := range d.Changes {
			if strings.Contains(c, "none") || strings.HasPrefix(c, "haproxy: ") {
				t.Fatalf("change %q; want the block's keys, each from empty", c)
			}
		}
		if !slices.Contains(d.Changes, `haproxy.socket: "" → /run/h.sock`) {
			t.Fatalf("changes %q; want haproxy.socket from empty", d.Changes)
		}
	})
	t.Run("active only seeds", func(t *testing.T) {
		d := old.Compare(parse(strings.Replace(valid, "active: blue", "active: green", 1)))
		if len(d.Changes) != 1 || !strings.Contains(d.Changes[0], "only seeds an empty state file") || len(d.Restart) != 0 {
			t.Fatalf("got %+v, want one change saying active moves no traffic", d)
		}
	})
	t.Run("what needs a restart", func(t *testing.T) {
		next := strings.NewReplacer("prod: 127.0.0.1:8080", "prod: 127.0.0.1:8088",
			"replicas: 2", "replicas: 3").Replace(valid)
		d := old.Compare(parse(next))
		if len(d.Restart) != 2 || !strings.HasPrefix(d.Restart[0], "listeners.prod: 127.0.0.1:8080 → 127.0.0.1:8088") ||
			!strings.HasPrefix(d.Restart[1], "slots.green.run: changed") {
			t.Fatalf("got restart %q", d.Restart)
		}
	})
}

func TestProblemsInLineOrder(t *testing.T) {
	err := joinByLine([]error{
		&Error{File: "v.yaml", Line: 37, Key: "slots.b", Msg: "b"},
		&Error{File: "v.yaml", Key: "active", Msg: "no line"},
		&Error{File: "v.yaml", Line: 33, Key: "slots.a", Msg: "a"},
	})
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], ":33:") || !strings.Contains(lines[1], ":37:") || !strings.Contains(lines[2], "no line") {
		t.Fatalf("problems in this order:\n%s\nwant line 33, line 37, then the one without a line", err)
	}
}
