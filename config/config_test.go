package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const valid = `
admin:
  listen: 127.0.0.1:9090
state:
  path: vipswap.db
listeners:
  prod: 127.0.0.1:8080
  stage: 127.0.0.1:8081
health:
  path: /api/ping?slot={slot}
  interval: 500ms
slots:
  blue:
    instances: [127.0.0.1:9001, 127.0.0.1:9002]
  green:
    run:
      command: [vipswap, app, --slot, green, --listen, "127.0.0.1:{port}"]
      replicas: 2
active: blue
`

func TestParseValid(t *testing.T) {
	c, err := Parse("test.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.SlotOrder, ","); got != "blue,green" {
		t.Errorf("slot order %q, want blue,green", got)
	}
	if c.Health.Interval != 500*time.Millisecond {
		t.Errorf("interval %v, want 500ms", c.Health.Interval)
	}
	if c.Proxy.MaxConnectionsPerClient != 256 {
		t.Errorf("max_connections_per_client %d, want 256", c.Proxy.MaxConnectionsPerClient)
	}
	if c.Health.Rise != 2 || c.Proxy.Attempts != 3 || c.Proxy.Hold != 2*time.Second {
		t.Errorf("defaults not applied: rise %d attempts %d hold %v", c.Health.Rise, c.Proxy.Attempts, c.Proxy.Hold)
	}
	if r := c.Slots["green"].Run; r == nil || r.Replicas != 2 || r.StopTimeout != 10*time.Second || r.Address != "127.0.0.1:{port}" {
		t.Errorf("green run = %+v, want 2 replicas, a 10s stop timeout and address 127.0.0.1:{port}", r)
	}
	if h := c.State.History; h.MaxEntries != 10000 || h.MaxAge != 720*time.Hour {
		t.Errorf("history retention %+v, want 10000 entries and 720h", h)
	}
	if c.State.Path != "vipswap.db" {
		t.Errorf("Parse changed state.path to %q; only Load resolves paths", c.State.Path)
	}
}

// TestLoadResolvesPaths: relative state.path and admin.token_file are
// relative to the configuration file, not to the working directory, so
// starting vipswap from elsewhere finds the same state.
func TestLoadResolvesPaths(t *testing.T) {
	dir := t.TempDir()
	src := strings.Replace(valid, "path: vipswap.db", "path: state/vipswap.db\n  history: {max_entries: 50, max_age: 0s}", 1)
	src = strings.Replace(src, "listen: 127.0.0.1:9090", "listen: 127.0.0.1:9090\n  token_file: tokens\n  hosts: [vipswap.example]", 1)
	if err := os.WriteFile(filepath.Join(dir, "vipswap.yaml"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // elsewhere
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, filepath.Join(dir, "vipswap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(rel)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state", "vipswap.db"); c.State.Path != want {
		t.Errorf("state.path %q, want %q", c.State.Path, want)
	}
	if want := filepath.Join(dir, "tokens"); c.Admin.TokenFile != want {
		t.Errorf("admin.token_file %q, want %q", c.Admin.TokenFile, want)
	}
	if h := c.State.History; h.MaxEntries != 50 || h.MaxAge != 0 {
		t.Errorf("history retention %+v, want 50 entries and no age bound", h)
	}
	if len(c.Admin.Hosts) != 1 || c.Admin.Hosts[0] != "vipswap.example" {
		t.Errorf("admin.hosts %q", c.Admin.Hosts)
	}

	abs := strings.Replace(valid, "path: vipswap.db", "path: /var/lib/vipswap/state.db", 1)
	os.WriteFile(filepath.Join(dir, "abs.yaml"), []byte(abs), 0o600)
	if c, err := Load(filepath.Join(dir, "abs.yaml")); err != nil || c.State.Path != "/var/lib/vipswap/state.db" {
		t.Errorf("an absolute state.path became %q (%v)", c.State.Path, err)
	}
}

func TestActiveDefaultsToFirstSlot(t *testing.T) {
	c, err := Parse("t.yaml", []byte("slots:\n  green:\n    instances: [127.0.0.1:1]\n  blue:\n    instances: [127.0.0.1:2]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Active != "green" {
		t.Fatalf("active %q, want green", c.Active)
	}
}

// Each invalid case names the key, and the line when the key is in the file.
func TestParseInvalid(t *testing.T) {
	cases := []struct {
		name string
		edit func(string) string
		want string
	}{
		{"unknown top-level key", func(s string) string { return s + "helth: {}\n" },
			`test.yaml:20: helth: unknown key`},
		{"shadow with no connection", func(s string) string { return s + "shadow:\n  max_conns: 0\n" },
			`test.yaml:21: shadow.max_conns: want 1 to 1024, got 0`},
		{"shadow memory too small", func(s string) string { return s + "shadow:\n  max_memory: 1000\n" },
			`test.yaml:21: shadow.max_memory: want at least 1048576 bytes, got 1000`},
		{"shadow busy wait negative", func(s string) string { return s + "shadow:\n  busy_wait: -1ms\n" },
			`test.yaml:21: shadow.busy_wait: invalid duration "-1ms" (want e.g. 1s or 500ms)`},
		{"shadow key unknown", func(s string) string { return s + "shadow:\n  queue: 5\n" },
			`test.yaml:21: shadow.queue: unknown key`},
		{"a plan's shadow gate without a duration", func(s string) string {
			return s + "rollouts:\n  careful:\n    steps: [50, 100]\n    shadow:\n      max_differ_rate: 2\n"
		}, `rollouts.careful.shadow.duration: must be more than zero`},
		{"unknown nested key", func(s string) string {
			return strings.Replace(s, "  interval: 500ms", "  interval: 500ms\n  intervall: 1s", 1)
		}, `test.yaml:12: health.intervall: unknown key`},
		{"bad duration", func(s string) string { return strings.Replace(s, "500ms", "5 parsecs", 1) },
			`test.yaml:11: health.interval: invalid duration "5 parsecs"`},
		{"negative duration", func(s string) string { return strings.Replace(s, "500ms", "-1s", 1) },
			`test.yaml:11: health.interval: invalid duration "-1s"`},
		{"slot with neither instances nor run", func(s string) string {
			return strings.Replace(s, "    instances: [127.0.0.1:9001, 127.0.0.1:9002]\n", "", 1)
		}, `slots.blue: set instances or run`},
		{"slot with both instances and run", func(s string) string {
			return strings.Replace(s, "      replicas: 2", "      replicas: 2\n    instances: [127.0.0.1:9009]", 1)
		}, `slots.green: set instances or run, not both`},
		{"active names no slot", func(s string) string { return strings.Replace(s, "active: blue", "active: purple", 1) },
			`test.yaml:19: active: slot "purple" is not defined in slots`},
		{"duplicate instance address", func(s string) string { return strings.Replace(s, "127.0.0.1:9002", "127.0.0.1:9001", 1) },
			`test.yaml:14: slots.blue.instances[1]: duplicate address 127.0.0.1:9001: already used by slots.blue.instances[0]`},
		{"instance on a listener address", func(s string) string { return strings.Replace(s, "127.0.0.1:9002", "127.0.0.1:8080", 1) },
			`slots.blue.instances[1]: duplicate address 127.0.0.1:8080: already used by listeners.prod`},
		{"slot named none", func(s string) string {
			return strings.Replace(s, "slots:\n", "slots:\n  none:\n    instances: [127.0.0.1:9301]\n", 1)
		},
			`slots.none: the slot name "none" is reserved`},
		{"slot names differing in case", func(s string) string {
			return strings.Replace(s, "active: blue", "  Blue:\n    instances: [127.0.0.1:9301]\nactive: blue", 1)
		},
			`slots.Blue: differs from slot "blue" only in case`},
		{"address without port", func(s string) string { return strings.Replace(s, "127.0.0.1:9002", "localhost", 1) },
			`slots.blue.instances[1]: invalid address "localhost"`},
		{"run address without {port}", func(s string) string {
			return strings.Replace(s, "replicas: 2", "replicas: 2\n      address: 127.0.0.1:9100", 1)
		},
			`test.yaml:19: slots.green.run.address: want host:{port}, where each instance listens (such as 127.0.0.1:{port}), got "127.0.0.1:9100"`},
		{"run address with a shell string", func(s string) string {
			return strings.Replace(s, "replicas: 2", "replicas: 2\n      address: \"myapp --listen 127.0.0.1:{port}\"", 1)
		}, `slots.green.run.address: want host:{port}`},
		{"run address without host", func(s string) string {
			return strings.Replace(s, "replicas: 2", "replicas: 2\n      address: \":{port}\"", 1)
		},
			`slots.green.run.address: want host:{port}`},
		{"run with an empty command", func(s string) string {
			return strings.Replace(s, `command: [vipswap, app, --slot, green, --listen, "127.0.0.1:{port}"]`, "command: []", 1)
		}, `slots.green.run.command: must name a program`},
		{"admin host with a port", func(s string) string {
			return strings.Replace(s, "listen: 127.0.0.1:9090", "listen: 127.0.0.1:9090\n  hosts: [ok.example, vipswap.example:9090]", 1)
		},
			`test.yaml:4: admin.hosts[1]: want a host name without port or wildcard (such as vipswap.example.com), got "vipswap.example:9090"`},
		{"admin host wildcard", func(s string) string {
			return strings.Replace(s, "listen: 127.0.0.1:9090", "listen: 127.0.0.1:9090\n  hosts: [\"*.example\"]", 1)
		},
			`admin.hosts[0]: want a host name without port or wildcard`},
		{"admin host URL", func(s string) string {
			return strings.Replace(s, "listen: 127.0.0.1:9090", "listen: 127.0.0.1:9090\n  hosts: [\"http://vipswap.example\"]", 1)
		},
			`admin.hosts[0]: want a host name`},
		{"history of no entries", func(s string) string {
			return strings.Replace(s, "path: vipswap.db", "path: vipswap.db\n  history: {max_entries: 0}", 1)
		},
			`test.yaml:6: state.history.max_entries: must be at least 1, got 0`},
		{"history age not a duration", func(s string) string {
			return strings.Replace(s, "path: vipswap.db", "path: vipswap.db\n  history: {max_age: 30d}", 1)
		},
			`test.yaml:6: state.history.max_age: invalid duration "30d"`},
		{"history unknown key", func(s string) string {
			return strings.Replace(s, "path: vipswap.db", "path: vipswap.db\n  history: {max: 5}", 1)
		},
			`state.history.max: unknown key (known: max_entries, max_age)`},
		{"wrong type", func(s string) string { return strings.Replace(s, "replicas: 2", "replicas: two", 1) },
			`test.yaml:18: slots.green.run.replicas: want a whole number, got "two"`},
		{"only one slot", func(s string) string {
			i := strings.Index(s, "  green:")
			return s[:i] + "active: blue\n"
		}, `slots: need at least two slots, got 1`},
		{"slot defined twice", func(s string) string {
			return strings.Replace(s, "  green:", "  blue:\n    instances: [127.0.0.1:9005]\n  green:", 1)
		}, `slots.blue: name is defined twice`},
		{"public admin without a token file", func(s string) string {
			return strings.Replace(s, "listen: 127.0.0.1:9090", "listen: 0.0.0.0:9090", 1)
		}, `admin.token_file: required when admin.listen is not a loopback address (it is 0.0.0.0:9090)`},
		{"route prefix with a dot segment", func(s string) string { return s + "routes: [{path_prefix: /api/2.0/../admin, slot: green}]\n" },
			`routes[0].path_prefix: "/api/2.0/../admin" has a dot segment (..): requests are matched with dot segments removed, so it would never match`},
		{"route prefix with //", func(s string) string { return s + "routes: [{path_prefix: //legacy/, slot: green}]\n" },
			`routes[0].path_prefix: "//legacy/" has an empty segment (//)`},
		{"route prefix with an encoded slash", func(s string) string { return s + "routes: [{path_prefix: /api%2F2.0/, slot: green}]\n" },
			`routes[0].path_prefix: "/api%2F2.0/" has a percent-escape: write the prefix decoded`},
		{"route prefix with a ;", func(s string) string { return s + "routes: [{path_prefix: /legacy;v=1/, slot: green}]\n" },
			`routes[0].path_prefix: "/legacy;v=1/" has a ;: routes do not match ;parameters`},
		{"route prefixes differing in a trailing slash", func(s string) string {
			return s + "routes: [{path_prefix: /api/, slot: green}, {path_prefix: /api, slot: blue}]\n"
		}, `routes[1]: matches the same requests as routes[0]`},
		{"not YAML", func(string) string { return "slots: [\n" }, `test.yaml: `},
		{"log format", func(s string) string { return s + "log: {format: xml}\n" },
			`log.format: want text or json, got "xml"`},
		{"log level", func(s string) string { return s + "log: {level: loud}\n" },
			`log.level: want debug, info, warn or error, got "loud"`},
		{"access sample above 1", func(s string) string { return s + "log: {access: true, access_sample: 5}\n" },
			`log.access_sample: want a fraction above 0 and at most 1, got 5`},
		{"access sample not a number", func(s string) string { return s + "log: {access_sample: some}\n" },
			`test.yaml:20: log.access_sample: want a number, got "some"`},
		{"negative per-client cap", func(s string) string { return s + "proxy:\n  max_connections_per_client: -1\n" },
			`test.yaml:21: proxy.max_connections_per_client: want a number of connections, or 0 for no cap, got -1`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(c.edit(valid)))
			if err == nil {
				t.Fatalf("got no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %q, want it to contain %q", err, c.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "test.yaml") {
					t.Errorf("error line %q does not name the file", line)
				}
			}
		})
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	src := strings.Replace(valid, "500ms", "soon", 1)
	src = strings.Replace(src, "active: blue", "active: purple", 1)
	_, err := Parse("test.yaml", []byte(src+"extra: 1\n"))
	if err == nil {
		t.Fatal("got no error")
	}
	// The decoder stops before validation when keys or types are wrong.
	if n := len(strings.Split(err.Error(), "\n")); n != 2 {
		t.Fatalf("got %d problems, want 2 (duration and unknown key): %v", n, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(valid)
	f.Add("slots: {a: {instances: [1.2.3.4:5]}, b: {run: {command: [x, '{port}']}}}")
	f.Add("health: &h {rise: 1}\nproxy: *h\n")
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Parse("fuzz.yaml", []byte(src))
		if err == nil && len(c.SlotOrder) < 2 {
			t.Fatalf("accepted a config with %d slots", len(c.SlotOrder))
		}
	})
}

func TestAdminLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "[::1]:9090": true, "localhost:9090": true, "127.8.0.1:1": true,
		"0.0.0.0:9090": false, ":9090": false, "10.0.0.1:9090": false, "[::]:9090": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
	src := strings.Replace(valid, "listen: 127.0.0.1:9090", "listen: 0.0.0.0:9090\n  token_file: tokens", 1)
	if _, err := Parse("test.yaml", []byte(src)); err != nil {
		t.Fatalf("public admin with a token file: %v", err)
	}
}

// TestExamplesAreValid: every configuration under examples/ loads, so the
// README's walkthroughs start.
func TestExamplesAreValid(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	more, _ := filepath.Glob("../examples/*/*.yaml")
	files = append(files, more...)
	if err != nil || len(files) < 3 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestHAProxyBlock: the haproxy block's defaults and its refusals.
func TestHAProxyBlock(t *testing.T) {
	base := "listeners: {prod: 127.0.0.1:18080, stage: 127.0.0.1:18081}\nslots:\n  blue: {instances: [127.0.0.1:19001]}\n  green: {instances: [127.0.0.1:19002]}\n"
	c, err := Parse("t.yaml", []byte(base+"haproxy: {socket: /run/h.sock, maps: {prod: /p.map, stage: /s.map}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := c.HAProxy; h.Health != "vipswap" || h.Timeout <= 0 || h.Interval <= 0 {
		t.Fatalf("defaults: %+v", h)
	}
	for _, tc := range []struct{ block, want string }{
		{"haproxy: {maps: {prod: /p.map, stage: /s.map}}", "haproxy.socket"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map}}", "haproxy.maps"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /p.map}}", "haproxy.maps"},
		{"haproxy: {socket: /h.sock, maps: {prod: '/p.map;x', stage: /s.map}}", "haproxy.maps"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /s.map}, health: both}", "haproxy.health"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /s.map}, backends: {purple: be_p}}", "haproxy.backends.purple"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /s.map}, backends: {blue: 'be blue'}}", "haproxy.backends.blue"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /s.map}, timeout: -1s}", "haproxy.timeout"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /s.map}, sockets: x}", "sockets"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /s.map}, backends: {green: be_blue}}", "share backend be_blue"},
		{"haproxy: {socket: /h.sock, maps: {prod: /p.map, stage: /s.map}, backends: {blue: be_x, green: be_x}}", "share backend be_x"},
	} {
		_, err := Parse("t.yaml", []byte(base+tc.block+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %s", tc.block, err, tc.want)
		}
	}
}

// TestListenerProtocols: http2 defaults to on in both forms of a
// listener, h2c to off; h2c on a TLS listener is refused in one line; the
// HTTP/2 limits are checked; a change of either key takes a restart,
// while the limits reload.
func TestListenerProtocols(t *testing.T) {
	c, err := Parse("test.yaml", []byte(strings.Replace(valid, "  stage: 127.0.0.1:8081", "  stage: {addr: 127.0.0.1:8081, h2c: true}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Listeners.Prod.HTTP2 || c.Listeners.Prod.H2C || !c.Listeners.Stage.HTTP2 || !c.Listeners.Stage.H2C {
		t.Fatalf("listeners %+v %+v: want http2 on by default, h2c as set", c.Listeners.Prod, c.Listeners.Stage)
	}
	if h := c.Proxy.HTTP2; h.MaxConcurrentStreams != 100 || h.StreamWindow != 256<<10 || h.ConnectionWindow != 1<<20 {
		t.Fatalf("HTTP/2 defaults %+v", h)
	}
	for _, bad := range []struct{ edit, extra, want string }{
		{"  prod: {addr: 127.0.0.1:8080, h2c: true, tls: {certs: [{cert: a.crt, key: a.key}]}}", "",
			"listeners.prod.h2c: h2c is cleartext HTTP/2; a TLS listener offers HTTP/2 by ALPN (http2: true): remove h2c or tls"},
		{"  prod: {addr: 127.0.0.1:8080, http2: maybe}", "", "listeners.prod.http2"},
		{"", "proxy: {http2: {max_concurrent_streams: 0}}", "proxy.http2.max_concurrent_streams: want 1 to 10000, got 0"},
		{"", "proxy: {http2: {stream_window: 1000}}", "proxy.http2.stream_window: want 65535 to 2147483647 bytes, got 1000"},
		{"", "proxy: {http2: {connection_window: 4294967296}}", "proxy.http2.connection_window: want 65535 to 2147483647 bytes"},
		{"", "proxy: {http2: {ping_timeout: 0s}}", "proxy.http2.ping_timeout: must be more than zero"},
	} {
		src := valid + bad.extra + "\n"
		if bad.edit != "" {
			src = strings.Replace(src, "  prod: 127.0.0.1:8080", bad.edit, 1)
		}
		_, err := Parse("test.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s%s: got %v, want %q", bad.edit, bad.extra, err, bad.want)
		}
	}
	reload, err := Parse("test.yaml", []byte(valid+"proxy: {http2: {max_concurrent_streams: 50}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := mustParse(t, valid).Compare(reload); len(d.Restart) != 0 || len(d.Changes) != 1 {
		t.Fatalf("a change of the HTTP/2 limits: %+v, want one change, no restart", d)
	}
	for _, edit := range []string{"  prod: {addr: 127.0.0.1:8080, h2c: true}", "  prod: {addr: 127.0.0.1:8080, http2: false, tls: {certs: [{cert: a.crt, key: a.key}]}}"} {
		before := strings.Replace(valid, "  prod: 127.0.0.1:8080", strings.NewReplacer("h2c: true", "h2c: false", "http2: false", "http2: true").Replace(edit), 1)
		d := mustParse(t, before).Compare(mustParse(t, strings.Replace(valid, "  prod: 127.0.0.1:8080", edit, 1)))
		if len(d.Restart) != 1 {
			t.Errorf("%s: %+v, want one change that takes a restart", edit, d)
		}
	}
}

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestShadowBlock(t *testing.T) {
	c, err := Parse("t.yaml", []byte(valid+`shadow:
  queue_size: 10
  max_conns: 4
  body_limit: 1024
  compare_limit: 2097152
  keep_limit: 4096
  max_memory: 8388608
  timeout: 2s
  ignore_fields: [timestamp, $.meta.id]
  ignore_headers: [X-Request-Id]
  stop_error_rate: 0.25
  stop_min_requests: 10
  busy_wait: 0s
rollouts:
  careful:
    steps: [10, 100]
    shadow:
      duration: 5m
      percent: 50
      max_differ_rate: 0.001
      max_p99_ratio: 1.2
      ignore_fields: [ts]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Shadow{QueueSize: 10, MaxConns: 4, BodyLimit: 1024, CompareLimit: 2 << 20, KeepLimit: 4096, MaxMemory: 8 << 20,
		Timeout: 2 * time.Second, IgnoreFields: []string{"timestamp", "$.meta.id"}, IgnoreHeaders: []string{"X-Request-Id"},
		StopErrorRate: 0.25, StopMinRequests: 10}
	if got := c.Shadow; got.QueueSize != want.QueueSize || got.MaxMemory != want.MaxMemory || got.CompareLimit != want.CompareLimit ||
		got.StopErrorRate != want.StopErrorRate || got.Timeout != want.Timeout || len(got.IgnoreFields) != 2 || got.IgnoreHeaders[0] != "X-Request-Id" ||
		got.BusyWait != 0 {
		t.Errorf("shadow %+v, want %+v", got, want)
	}
	g := c.Rollouts["careful"].Shadow
	if g == nil || g.Duration != 5*time.Minute || g.Percent != 50 || g.MaxDifferRate != 0.001 || g.MaxP99Ratio != 1.2 || g.IgnoreFields[0] != "ts" {
		t.Errorf("plan's shadow gate %+v", g)
	}
	if d := Default().Shadow; d.QueueSize != 1024 || d.MaxConns != 32 || d.MaxMemory != 32<<20 || d.StopErrorRate != 0.5 || d.BusyWait != time.Millisecond {
		t.Errorf("defaults %+v", d)
	}
}
