package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// needsRestart lists the keys (and key prefixes, ending in ".") that a
// running vipswap cannot change: the addresses it listens on (and whether
// they speak TLS; their certificates a reload re-reads), the store,
// the admin API's guards and the listeners' connection limits.
var needsRestart = []string{"admin.", "listeners.", "state.", "proxy.max_connections", "haproxy", "haproxy.", "shadow.",
	"azure_lb", "azure_lb.", "azure_appgw", "azure_appgw.", "azure_frontdoor", "azure_frontdoor."}

// Diff is what changed between two configurations.
type Diff struct {
	// Changes says what changed, one line each: "health.interval: 1s → 500ms",
	// "slots.blue: +127.0.0.1:9003 −127.0.0.1:9001", "slots.red: added".
	Changes []string
	// Restart lists the changes a running vipswap cannot apply, one line
	// each, with the key.
	Restart []string
}

// Compare returns what changed from c to next.
func (c *Config) Compare(next *Config) Diff {
	var d Diff
	a, b := flatten(reflect.ValueOf(*c), ""), flatten(reflect.ValueOf(*next), "")
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if a[k] == b[k] {
			continue
		}
		line := fmt.Sprintf("%s: %s → %s", k, show(a[k]), show(b[k]))
		d.Changes = append(d.Changes, line)
		if restartOnly(k) {
			d.Restart = append(d.Restart, line)
		}
	}
	if (c.Admin.TLS == nil) != (next.Admin.TLS == nil) {
		// Its certificates a reload re-reads; turning TLS on or off
		// takes a restart, as for a listener.
		d.Restart = append(d.Restart, "admin.tls: turned "+map[bool]string{true: "on", false: "off"}[next.Admin.TLS != nil])
	}
	if c.Active != next.Active {
		// Not a change of the running state: say so, or the operator
		// thinks the reload moved prod.
		d.Changes = append(d.Changes, fmt.Sprintf("active: %s → %s (only seeds an empty state file: it moves no traffic; use vipswap swap or shift)", show(c.Active), show(next.Active)))
	}
	for _, name := range union(c.SlotOrder, next.SlotOrder) {
		old, had := c.Slots[name]
		cur, has := next.Slots[name]
		key := "slots." + name
		switch {
		case !had:
			d.Changes = append(d.Changes, key+": added")
		case !has:
			d.Changes = append(d.Changes, key+": removed")
		case (old.Run == nil) != (cur.Run == nil):
			line := key + ": changed between instances and run"
			d.Changes = append(d.Changes, line)
			d.Restart = append(d.Restart, line+" (add the new one as another slot, or restart)")
		case old.Run != nil && !reflect.DeepEqual(old.Run, cur.Run):
			line := key + ".run: changed"
			d.Changes = append(d.Changes, line)
			d.Restart = append(d.Restart, line+" (add the new version as another slot, or restart)")
		case old.Version != cur.Version && slices.Equal(old.Instances, cur.Instances):
			d.Changes = append(d.Changes, fmt.Sprintf("%s.version: %s → %s", key, show(old.Version), show(cur.Version)))
		case !slices.Equal(old.Instances, cur.Instances):
			var parts []string
			for _, a := range cur.Instances {
				if !slices.Contains(old.Instances, a) {
					parts = append(parts, "+"+a)
				}
			}
			for _, a := range old.Instances {
				if !slices.Contains(cur.Instances, a) {
					parts = append(parts, "-"+a)
				}
			}
			if len(parts) == 0 {
				parts = append(parts, "reordered")
			}
			d.Changes = append(d.Changes, key+": "+strings.Join(parts, " "))
		}
		if had && has && old.ProxyProtocol != cur.ProxyProtocol {
			d.Changes = append(d.Changes, fmt.Sprintf("%s.proxy_protocol: %s → %s", key, show(old.ProxyProtocol), show(cur.ProxyProtocol)))
		}
		if had && has && old.Protocol != cur.Protocol {
			d.Changes = append(d.Changes, fmt.Sprintf("%s.protocol: %s → %s", key, show(old.Protocol), show(cur.Protocol)))
		}
		if had && has && !reflect.DeepEqual(old.TLS, cur.TLS) {
			d.Changes = append(d.Changes, key+".tls: changed")
		}
	}
	return d
}

func restartOnly(key string) bool {
	if strings.HasPrefix(key, "listeners.prod.tls.acme.") || strings.HasPrefix(key, "listeners.stage.tls.acme.") {
		return true // the certificate manager starts with the node
	}
	if strings.HasPrefix(key, "listeners.prod.tls.") || strings.HasPrefix(key, "listeners.stage.tls.") || strings.HasPrefix(key, "admin.tls.") {
		return false // a TLS listener's certificates are re-read by a reload
	}
	for _, p := range needsRestart {
		if key == p || (strings.HasSuffix(p, ".") && strings.HasPrefix(key, p)) {
			return true
		}
	}
	return false
}

func show(v string) string {
	if v == "" {
		return `""`
	}
	return v
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// flatten turns a configuration struct into key path → value, by yaml
// tags, leaving out slots (compared on their own) and active (it only
// seeds an empty store).
func flatten(v reflect.Value, path string) map[string]string {
	out := map[string]string{}
	t := v.Type()
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		if tag == "" || tag == "-" || (path == "" && (tag == "slots" || tag == "active")) {
			continue
		}
		key := join(path, tag)
		f := v.Field(i)
		if f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct {
			if f.IsNil() { // an absent block compares as one with every key empty
				f = reflect.Zero(f.Type().Elem())
			} else {
				f = f.Elem()
			}
		}
		if l, ok := f.Interface().(Listener); ok && l.Short() {
			out[key] = l.Addr // the short form: listeners.prod: ADDR
			if l.H2C {
				out[key+".h2c"] = "true"
			}
			continue
		}
		if f.Kind() == reflect.Struct && f.Type() != durationType {
			for k, s := range flatten(f, key) {
				out[k] = s
			}
			continue
		}
		out[key] = render(f)
	}
	return out
}

// shortDuration writes d as a configuration would: 5m, not 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// quoted writes s bare when YAML would read it back as the same string,
// else in double quotes: "1", "a, slot: blue}", "".
func quoted(s string) string {
	if s == "" || strings.ContainsAny(s, ",{}[]'\"") || strings.Contains(s, ": ") || strings.Contains(s, " #") ||
		strings.HasSuffix(s, ":") || strings.ContainsAny(s[:1], "-?:#&*!|>%@`") || strings.TrimSpace(s) != s {
		return strconv.Quote(s)
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return strconv.Quote(s)
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~":
		return strconv.Quote(s)
	}
	return s
}

// render writes a value as it would read in the file's flow style:
// "[{path_prefix: /api/2.0/, slot: green}]", "none" for an absent block.
func render(v reflect.Value) string {
	switch {
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return "none"
		}
		return render(v.Elem())
	case v.Kind() == reflect.Struct && v.Type() != durationType:
		var parts []string
		for i := range v.NumField() {
			tag := v.Type().Field(i).Tag.Get("yaml")
			if tag == "" || tag == "-" || v.Field(i).IsZero() {
				continue
			}
			parts = append(parts, tag+": "+render(v.Field(i)))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Array:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = render(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case v.Type() == durationType:
		return shortDuration(time.Duration(v.Int()))
	case v.Kind() == reflect.String:
		return quoted(v.String())
	case v.Kind() == reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprint(k) + ": " + render(v.MapIndex(k))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}
