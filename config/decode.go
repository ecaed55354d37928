package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads, decodes and validates the configuration at path, read as one
// complete version of the file (ReadSnapshot): a file being rewritten in
// place is not taken half-written. Relative
// file paths in it (state.path, admin.token_file) are made absolute against
// the configuration file's directory, so vipswap finds the same state
// whatever directory it is started from.
func Load(path string) (*Config, error) {
	data, err := ReadSnapshot(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.State.Path = resolve(dir, c.State.Path)
	c.Admin.TokenFile = resolve(dir, c.Admin.TokenFile)
	c.Affinity.KeyFile = resolve(dir, c.Affinity.KeyFile)
	for _, t := range []*ListenerTLS{c.Listeners.Prod.TLS, c.Listeners.Stage.TLS, c.Admin.TLS} {
		if t != nil {
			for i := range t.Certs {
				t.Certs[i].Cert, t.Certs[i].Key = resolve(dir, t.Certs[i].Cert), resolve(dir, t.Certs[i].Key)
			}
			if a := t.ACME; a != nil {
				a.CARoot = resolve(dir, a.CARoot)
			}
		}
	}
	for name, s := range c.Slots {
		if t := s.TLS; t != nil {
			t.CA, t.Cert, t.Key = resolve(dir, t.CA), resolve(dir, t.Cert), resolve(dir, t.Key)
			c.Slots[name] = s
		}
	}
	if h := c.HAProxy; h != nil && (strings.HasPrefix(h.Socket, ".") || !strings.Contains(h.Socket, ":")) {
		h.Socket = resolve(dir, h.Socket)
	}
	if e := c.State.Etcd; e != nil {
		e.LocalCopy = resolve(dir, e.LocalCopy)
		e.PasswordFile = resolve(dir, e.PasswordFile)
		e.TLS.CA, e.TLS.Cert, e.TLS.Key = resolve(dir, e.TLS.CA), resolve(dir, e.TLS.Cert), resolve(dir, e.TLS.Key)
	}
	return c, nil
}

// resolve returns p relative to dir when p is relative; empty stays empty.
func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// Parse decodes and validates a configuration; name is used in messages.
// Decoding is strict: an unknown key, a value of the wrong type or a bad
// duration is an error. The returned error joins one line per problem, each
// naming the file, line and key.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	c.file = name
	c.lines = make(map[string]int)
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	d := &decoder{c: c}
	if len(root.Content) > 0 {
		d.decode(root.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	if len(d.errs) > 0 {
		return nil, joinByLine(d.errs)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

var durationType = reflect.TypeFor[time.Duration]()

type decoder struct {
	c    *Config
	errs []error
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.c.file, Line: n.Line, Key: path, Msg: fmt.Sprintf(format, args...)})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode stores n into v, recording each key's line and every problem.
// listenerType is decoded from an address or a mapping.
var listenerType = reflect.TypeFor[Listener]()

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.c.lines[path] = n.Line
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value keeps the default
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a duration such as 1s or 500ms")
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil || dur < 0 {
			d.errorf(n, path, "invalid duration %q (want e.g. 1s or 500ms)", n.Value)
			return
		}
		v.SetInt(int64(dur))
	case v.Type() == listenerType && n.Kind == yaml.ScalarNode:
		v.Set(reflect.ValueOf(Listener{Addr: n.Value, HTTP2: true})) // the short form: an address
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case v.Kind() == reflect.Struct:
		d.decodeStruct(n, v, path)
	case v.Kind() == reflect.Map:
		d.decodeMap(n, v, path)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "want a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case v.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a string")
			return
		}
		v.SetString(n.Value)
	case v.Kind() == reflect.Int:
		i, err := strconv.Atoi(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.errorf(n, path, "want a whole number, got %q", n.Value)
			return
		}
		v.SetInt(int64(i))
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.errorf(n, path, "want a number, got %q", n.Value)
			return
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.errorf(n, path, "want true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	default:
		panic("config: unsupported field type " + v.Type().String())
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping of keys")
		return
	}
	fields := make(map[string][]int)
	var known []string
	var collect func(t reflect.Type, index []int)
	collect = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			at := append(append([]int(nil), index...), i)
			if tag == ",inline" && f.Type.Kind() == reflect.Struct {
				collect(f.Type, at) // an embedded block's keys are the struct's own
				continue
			}
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = at
			known = append(known, tag)
		}
	}
	collect(v.Type(), nil)
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		idx, ok := fields[k.Value]
		switch {
		case !ok:
			d.errorf(k, key, "unknown key (known: %s)", strings.Join(known, ", "))
			continue
		case seen[k.Value]:
			d.errorf(k, key, "key is set twice")
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.FieldByIndex(idx), key)
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping of names")
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		if v.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.errorf(k, key, "name is defined twice")
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, key)
		v.SetMapIndex(reflect.ValueOf(k.Value), elem)
		if path == "slots" {
			d.c.SlotOrder = append(d.c.SlotOrder, k.Value)
		}
	}
}

// Error is one configuration problem.
type Error struct {
	// File is the configuration file's name.
	File string
	// Line is the 1-based line of the key, or 0 when the key is absent.
	Line int
	// Key is the dotted key path, e.g. "slots.blue.instances[1]".
	Key string
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
}

// ParseRun reads a slot's run: block on its own (vipswap slot add
// --run-file), with the configuration's defaults and checks; name is the
// file's, for messages.
func ParseRun(name string, data []byte) (*Run, error) {
	c := &Config{file: name, lines: make(map[string]int)}
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var r Run
	d := &decoder{c: c}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty: want a run block (command, address, replicas, stop_timeout)", name)
	}
	d.decode(root.Content[0], reflect.ValueOf(&r).Elem(), "run")
	if len(d.errs) > 0 {
		return nil, joinByLine(d.errs)
	}
	r.applyDefaults()
	v := &validator{c: c, addrs: map[string]string{}}
	v.run("run", &r)
	if len(v.errs) > 0 {
		return nil, joinByLine(v.errs)
	}
	return &r, nil
}

// joinByLine joins problems one per line in the file's order, so a long
// list reads top to bottom; problems with no line come last.
func joinByLine(errs []error) error {
	line := func(err error) int {
		var e *Error
		if errors.As(err, &e) && e.Line > 0 {
			return e.Line
		}
		return math.MaxInt
	}
	sorted := slices.Clone(errs)
	slices.SortStableFunc(sorted, func(a, b error) int { return cmp.Compare(line(a), line(b)) })
	return errors.Join(sorted...)
}
