package route

import (
	"net/url"
	"strings"
	"testing"
)

func TestCleanPath(t *testing.T) {
	for _, c := range []struct{ raw, decoded, escaped string }{
		{"/", "/", "/"},
		{"/api/2.0/x", "/api/2.0/x", "/api/2.0/x"},
		{"/api/2.0/../../admin", "/admin", "/admin"},
		{"/api/2.0/%2e%2e/%2E%2E/admin", "/admin", "/admin"},
		{"/api/2.0/.%2e/%2e./admin", "/admin", "/admin"},
		{"//legacy/x", "/legacy/x", "/legacy/x"},
		{"/./legacy/x", "/legacy/x", "/legacy/x"},
		{"/a/../legacy/x", "/legacy/x", "/legacy/x"},
		{"/%2e/legacy/x", "/legacy/x", "/legacy/x"},
		{"/a//b///c//", "/a/b/c/", "/a/b/c/"},
		{"//", "/", "/"},
		{"/.", "/", "/"},
		{"/a/.", "/a/", "/a/"},
		{"/a/./", "/a/", "/a/"},
		{"/a/b/..", "/a/", "/a/"},
		{"/a/..", "/", "/"},
		{"/a/b/../c", "/a/c", "/a/c"},
		{"/...", "/...", "/..."},
		{"/a/.b/..c/c..", "/a/.b/..c/c..", "/a/.b/..c/c.."},
		{"/%61pi/%7e%2D", "/api/~-", "/api/~-"},
		{"/a%20b", "/a b", "/a%20b"},
		{"/caf%c3%a9", "/caf\xc3\xa9", "/caf%C3%A9"},
		{"/caf\xc3\xa9", "/caf\xc3\xa9", "/caf%C3%A9"},
		{"/a%3bb;c=%3D", "/a;b;c==", "/a%3Bb;c=%3D"},
		{"/%25%32%65", "/%2e", "/%252e"},
		{"/{x}|#", "/{x}|#", "/%7Bx%7D%7C%23"},
		{"/legacy;v=1/x", "/legacy;v=1/x", "/legacy;v=1/x"},
	} {
		p, err := CleanPath(c.raw)
		if err != nil || p.Decoded != c.decoded || p.Escaped != c.escaped {
			t.Errorf("CleanPath(%q) = %q, %q, %v; want %q, %q", c.raw, p.Decoded, p.Escaped, err, c.decoded, c.escaped)
		}
	}
	for _, c := range []struct{ raw, reason string }{
		{"", "does not start with /"},
		{"api", "does not start with /"},
		{"/a/..%2F..%2Fadmin", "encoded slash"},
		{"/a/..%2f", "encoded slash"},
		{"/a%5cb", "backslash"},
		{`/a\b`, "backslash"},
		{"/a%00", "NUL"},
		{"/a%", "malformed"},
		{"/a%2", "malformed"},
		{"/a%zz", "malformed"},
		{"/a%2/b", "malformed"},
		{"/..", "above the root"},
		{"/a/../..", "above the root"},
		{"/a/%2e%2e/%2e%2e/b", "above the root"},
		{"/../a", "above the root"},
	} {
		p, err := CleanPath(c.raw)
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("CleanPath(%q) = %+v, %v; want an error saying %q", c.raw, p, err, c.reason)
		}
	}
}

// A canonical path without escapes, the common case, costs no allocation.
func TestCleanPathDoesNotAllocate(t *testing.T) {
	for _, raw := range []string{"/", "/api/2.0/users/42", "/a/b/", "/a;v=1/x.json", "/..."} {
		if n := testing.AllocsPerRun(1000, func() { CleanPath(raw) }); n != 0 {
			t.Errorf("CleanPath(%q) allocates %v times", raw, n)
		}
	}
}

func TestRoutesMatchOnSegmentBoundaries(t *testing.T) {
	blue, green, red := instances("blue", 1), instances("green", 1), instances("red", 1)
	s := spec(map[string]uint32{"blue": 1}, map[string][]*Instance{"blue": blue, "green": green, "red": red})
	s.Routes = []Route{
		{PathPrefix: "/api", Slot: "green"},
		{PathPrefix: "/legacy/", Slot: "red"},
		{PathPrefix: "/legacy/v2/", Slot: "blue"},
		{PathPrefix: "/caf\xc3\xa9/", Slot: "red"},
	}
	tb := Build(s)
	for _, c := range []struct{ path, want string }{
		{"/api", "green"},
		{"/api/", "green"},
		{"/api/x", "green"},
		{"/apix", ""},
		{"/ap", ""},
		{"/legacy", "red"},
		{"/legacy/", "red"},
		{"/legacy/x/y", "red"},
		{"/legacyx/y", ""},
		{"/legacy/v2", "blue"},
		{"/legacy/v2/x", "blue"},
		{"/legacy/v22", "red"},
		{"/Legacy/x", ""}, // case-sensitive
		{"/caf%C3%A9/x", "red"},
		{"/legacy/x;v=1", "red"},
		{"/", ""},
		{"*", ""},
	} {
		p := Path{c.path, c.path}
		if c.path != "*" {
			var err error
			if p, err = CleanPath(c.path); err != nil {
				t.Fatal(err)
			}
		}
		sl, err := tb.Routed(p, nil)
		if err != nil {
			t.Errorf("Routed(%q): %v", c.path, err)
			continue
		}
		if got := slotName(sl); got != c.want {
			t.Errorf("Routed(%q) = %q, want %q", c.path, got, c.want)
		}
	}

	t.Run("a root route matches every path", func(t *testing.T) {
		s.Routes = []Route{{PathPrefix: "/", Header: "X-Beta", Value: "1", Slot: "green"}, {PathPrefix: "/legacy", Slot: "red"}}
		tb := Build(s)
		beta := map[string][]string{"X-Beta": {"1"}}
		for path, want := range map[string]string{"/": "green", "/x/y": "green", "/legacy/x": "red"} {
			if sl, _ := tb.Routed(Path{path, path}, beta); slotName(sl) != want {
				t.Errorf("Routed(%q) with X-Beta = %q, want %q", path, slotName(sl), want)
			}
		}
		if sl, _ := tb.Routed(Path{"*", "*"}, beta); sl != nil {
			t.Errorf("Routed(*) = %q, want no route", sl.Name)
		}
	})

	t.Run(";parameters that change the route are refused", func(t *testing.T) {
		s.Routes = []Route{{PathPrefix: "/legacy/", Slot: "red"}, {PathPrefix: "/api/2.0/", Slot: "green"}}
		tb := Build(s)
		for _, c := range []struct{ raw, want string }{
			{"/legacy;v=1/x", "refused"},          // /legacy/x to a servlet container
			{"/legacy%3Bv=1/x", "refused"},        // the same, for one that decodes first
			{"/api/2.0/..;/..;/admin", "refused"}, // /admin to a servlet container
			{"/api;x/2.0/y", "refused"},
			{"/..;/legacy", "refused"}, // above the root to a servlet container
			{"/legacy/x;v=1", "red"},
			{"/legacy;v=1", "refused"},
			{"/other;v=1/x", ""},
			{"/a/..;/b", ""}, // /b: no route either way
			{"/api/2.0/a/..;/b", "green"},
		} {
			p, err := CleanPath(c.raw)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			sl, err := tb.Routed(p, nil)
			switch {
			case err != nil:
				got = "refused"
				if _, ok := err.(*PathError); !ok {
					t.Errorf("Routed(%q): %T, want a *PathError", c.raw, err)
				}
			default:
				got = slotName(sl)
			}
			if got != c.want {
				t.Errorf("Routed(%q) = %q, want %q", c.raw, got, c.want)
			}
		}
		if sl, err := Build(spec(map[string]uint32{"blue": 1}, nil)).Routed(Path{"/..;/x", "/..;/x"}, nil); sl != nil || err != nil {
			t.Errorf("without routes, a ; path is no route and no error; got %v, %v", sl, err)
		}
	})
}

func TestCheckPrefix(t *testing.T) {
	for _, ok := range []string{"/", "/api", "/api/", "/api/2.0/", "/caf\xc3\xa9/", "/a.b/...", "/v1:beta@x/"} {
		if err := CheckPrefix(ok); err != nil {
			t.Errorf("CheckPrefix(%q) = %v, want nil", ok, err)
		}
	}
	for _, c := range []struct{ prefix, reason string }{
		{"", "starting with /"},
		{"api/", "starting with /"},
		{"/a b", "space"},
		{"/api/../admin", "dot segment (..)"},
		{"/./api", "dot segment (.)"},
		{"/api/..", "dot segment (..)"},
		{"//api", "empty segment"},
		{"/api//", "empty segment"},
		{"/api/2.0%2F", "decoded"},
		{"/caf%C3%A9", "decoded"},
		{`/a\b`, "backslash"},
		{"/legacy;v=1/", ";"},
		{"/a?b", "path only"},
		{"/a#b", "path only"},
	} {
		err := CheckPrefix(c.prefix)
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("CheckPrefix(%q) = %v, want an error saying %q", c.prefix, err, c.reason)
		}
	}
}

func slotName(s *Slot) string {
	if s == nil {
		return ""
	}
	return s.Name
}

// instanceReads is the path an instance reads from raw when it decodes it
// and then removes dot segments and merges slashes, as net/http's
// ServeMux and nginx do. It is written apart from CleanPath, from
// url.PathUnescape and a stack of segments. ok is false when raw is not
// a path or a .. would climb above the root.
func instanceReads(raw string) (path string, ok bool) {
	d, err := url.PathUnescape(raw)
	if err != nil || !strings.HasPrefix(d, "/") {
		return "", false
	}
	segs := strings.Split(d[1:], "/")
	var out []string
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", false
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
			continue
		}
		if last {
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/"), true
}

// servletReads is the path a servlet container reads from raw: it drops
// every segment's ;parameters (from a raw ;, or with escaped also from
// %3B), then reads the rest as instanceReads does.
func servletReads(raw string, escaped bool) (string, bool) {
	segs := strings.Split(raw, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			segs[i] = s[:j]
		}
		if j := strings.Index(segs[i], "%3B"); escaped && j >= 0 {
			segs[i] = segs[i][:j]
		}
	}
	return instanceReads(strings.Join(segs, "/"))
}

// fuzzRoutes are the routes FuzzCleanPath routes by, and wantSlot routes
// a path by them, apart from the Table: the slot of the longest prefix
// whose segments begin the path's, a route with a header first.
var fuzzRoutes = []Route{
	{PathPrefix: "/api/2.0/", Slot: "green"},
	{PathPrefix: "/api/2.0/", Header: "X-Beta", Value: "1", Slot: "red"},
	{PathPrefix: "/legacy", Slot: "red"},
	{PathPrefix: "/a b/", Slot: "green"},
}

func wantSlot(path string, beta bool) string {
	best, bestLen := "", -1
	for _, r := range fuzzRoutes {
		if r.Header != "" && !beta {
			continue
		}
		want := strings.Split(strings.Trim(r.PathPrefix, "/"), "/")
		got := strings.Split(strings.TrimPrefix(path, "/"), "/")
		if len(got) < len(want) {
			continue
		}
		match := true
		for i := range want {
			match = match && got[i] == want[i]
		}
		if n := len(r.PathPrefix) + len(r.Header); match && n > bestLen {
			best, bestLen = r.Slot, n
		}
	}
	return best
}

// FuzzCleanPath holds CleanPath and routing to the reading of a path by
// the instances behind vipswap: whatever a client sends, vipswap either
// refuses it for a documented reason, or routes it as every instance
// reads the path it is forwarded, and that path is canonical.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{
		"/", "/api/2.0/x", "/api/2.0/../../admin", "/api/2.0/%2e%2e/%2e%2e/admin", "/api/2.0/..%2F..%2Fadmin",
		"//legacy/x", "/./legacy/x", "/a/../legacy/x", "/%2e/legacy/x", "/legacy;v=1/x", "/legacy%3bv=1/x",
		"/api/2.0/..;/..;/admin", "/%61pi/2.0/", "/a%20b/c", "/a+b/c", "/..", "/a/b/..", "/a\\b", "/x%00",
		"/caf\xc3\xa9/%7B%7d#", "/%252e%252e/", "/a//b/./c/..", "/.%2E/", "/legacy/.;/x", "/;/legacy",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	tb := Build(Spec{Routes: fuzzRoutes})
	f.Fuzz(func(t *testing.T, raw string, beta bool) {
		var header map[string][]string
		if beta {
			header = map[string][]string{"X-Beta": {"1"}}
		}
		p, err := CleanPath(raw)
		if err != nil {
			// Refused: only for the reasons CleanPath documents.
			lower := strings.ToLower(raw)
			_, readable := instanceReads(raw)
			if strings.HasPrefix(raw, "/") && !strings.Contains(raw, `\`) && readable &&
				!strings.Contains(lower, "%2f") && !strings.Contains(lower, "%5c") && !strings.Contains(lower, "%00") && !strings.Contains(raw, "\x00") {
				t.Fatalf("CleanPath(%q) refused it (%v) for no documented reason", raw, err)
			}
			return
		}
		// Canonical, and idempotent.
		for _, s := range []string{p.Decoded, p.Escaped} {
			if !strings.HasPrefix(s, "/") || strings.Contains(s, "//") || strings.Contains(s, "/./") ||
				strings.Contains(s, "/../") || strings.HasSuffix(s, "/.") || strings.HasSuffix(s, "/..") {
				t.Fatalf("CleanPath(%q) = %+v is not canonical", raw, p)
			}
		}
		if again, err := CleanPath(p.Escaped); err != nil || again != p {
			t.Fatalf("CleanPath(%q) = %+v, but CleanPath of its escaped form is %+v, %v", raw, p, again, err)
		}
		for i := 0; i < len(p.Escaped); i++ {
			switch c := p.Escaped[i]; {
			case c == '%':
				if i+2 >= len(p.Escaped) || strings.ToUpper(p.Escaped[i+1:i+3]) != p.Escaped[i+1:i+3] {
					t.Fatalf("CleanPath(%q).Escaped = %q: an escape that is not upper-case", raw, p.Escaped)
				}
				if v, _ := url.PathUnescape(p.Escaped[i : i+3]); unreserved[v[0]] || v == "/" || v == `\` || v == "\x00" {
					t.Fatalf("CleanPath(%q).Escaped = %q escapes %q", raw, p.Escaped, v)
				}
			case c != '/' && pathClass[c] != plain:
				t.Fatalf("CleanPath(%q).Escaped = %q carries %q unescaped", raw, p.Escaped, c)
			}
		}
		// What an instance reads, from the client's path and from the
		// forwarded one, is the decoded path that was routed.
		if got, ok := instanceReads(raw); !ok || got != p.Decoded {
			t.Fatalf("CleanPath(%q).Decoded = %q, but an instance reads the client's path as %q", raw, p.Decoded, got)
		}
		if got, ok := instanceReads(p.Escaped); !ok || got != p.Decoded {
			t.Fatalf("CleanPath(%q).Decoded = %q, but an instance reads the forwarded %q as %q", raw, p.Decoded, p.Escaped, got)
		}
		// The route is the one the instance's reading calls for, whether
		// it keeps ;parameters or drops them; when those differ, the
		// request is refused.
		sl, err := tb.Routed(p, header)
		want := wantSlot(p.Decoded, beta)
		agree := true
		for _, escaped := range []bool{false, true} {
			s, ok := servletReads(p.Escaped, escaped)
			agree = agree && ok && wantSlot(s, beta) == want
		}
		switch {
		case err != nil && agree:
			t.Fatalf("Routed(%+v) refused it (%v), but every reading routes it to %q", p, err, want)
		case err == nil && !agree:
			t.Fatalf("Routed(%+v) = %q, but a servlet container's reading routes it elsewhere", p, slotName(sl))
		case err == nil && slotName(sl) != want:
			t.Fatalf("Routed(%+v) = %q, but an instance reading %q routes it to %q", p, slotName(sl), p.Decoded, want)
		}
	})
}

// BenchmarkCleanPath is the request path's cost of making a path
// canonical: none for a canonical path, one pass and two strings for one
// that is not.
func BenchmarkCleanPath(b *testing.B) {
	for _, raw := range []string{"/api/2.0/users/42", "/api/2.0/./users/%2e%2e/42", "/caf%C3%A9/menu"} {
		b.Run(raw, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				CleanPath(raw)
			}
		})
	}
}

// BenchmarkRouted is a route's match for a path: a few string compares.
func BenchmarkRouted(b *testing.B) {
	tb := Build(Spec{Routes: fuzzRoutes})
	p := Path{"/api/2.0/users/42", "/api/2.0/users/42"}
	b.ReportAllocs()
	for b.Loop() {
		tb.Routed(p, nil)
	}
}
