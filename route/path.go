package route

import (
	"bytes"
	"fmt"
	"strings"
)

// Path is a request's path in canonical form, as CleanPath makes it: it
// starts with /, has no dot segments and no empty ones (// is merged to
// /), no encoded slash or backslash, and its percent-escapes are
// canonical.
type Path struct {
	// Decoded is the path with every percent-escape decoded: what routes
	// match, and what an instance reads when it decodes Escaped.
	Decoded string
	// Escaped is the path as it goes on the request line to an instance:
	// unreserved characters are never escaped, other escapes keep the
	// client's choice with upper-case hex digits, and bytes a path may
	// not carry as they are (", #, <, >, [, ], ^, `, {, |, }, controls,
	// bytes above 0x7F) are escaped.
	Escaped string
}

// PathError is a request path vipswap refuses to route; the client is
// answered 400 with its Reason.
type PathError struct {
	// Reason says in a few words what is wrong with the path.
	Reason string
}

func (e *PathError) Error() string { return e.Reason }

// The reasons a path is refused. They are values, so refusing a request
// allocates nothing.
var (
	errNotAbsolute = &PathError{"the request path does not start with /"}
	errBadEscape   = &PathError{"a malformed percent-escape in the request path"}
	errSlash       = &PathError{"an encoded slash (%2F) in the request path"}
	errBackslash   = &PathError{`a backslash (\ or %5C) in the request path`}
	errNUL         = &PathError{"a NUL (%00) in the request path"}
	errAboveRoot   = &PathError{"the request path's .. segments climb above the root"}
	errParams      = &PathError{"the ;parameters in the request path change its route (servers that drop them and servers that keep them would read different paths)"}
)

// byte classes of a raw path
const (
	plain     = iota // kept as it is: unreserved, sub-delims, : and @ (RFC 3986 pchar)
	encode           // escaped on the way out: a path may not carry it as it is
	slash            // /
	percent          // starts an escape
	backslash        // refused: some servers read it as /
	nul              // refused: some servers end the path there
)

var pathClass = func() (t [256]uint8) {
	for i := range t {
		t[i] = encode
	}
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@") {
		t[c] = plain
	}
	t['/'], t['%'], t['\\'], t[0] = slash, percent, backslash, nul
	return t
}()

var unreserved = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~") {
		t[c] = true
	}
	return t
}()

const upperHex = "0123456789ABCDEF"

// CleanPath makes raw, a request target's path as the client sent it
// (percent-encoded, without the query), canonical, or refuses it with a
// *PathError:
//
//   - dot segments are removed as RFC 3986 section 5.2.4 says, whether
//     their dots are written raw or escaped (%2e, %2E); a .. that would
//     climb above the root is refused;
//   - runs of / are merged into one;
//   - escapes of unreserved characters (letters, digits, - . _ ~) are
//     decoded (/%61pi is /api), other escapes keep the client's choice and
//     get upper-case hex digits;
//   - an encoded slash (%2F) or a backslash (\, %5C) is refused: servers
//     disagree on whether it separates segments, so no one reading of the
//     path would hold for every instance; a NUL (raw or %00) is refused
//     too, since some servers end the path there;
//   - ; is part of its segment, as RFC 3986 reads it.
//
// An already canonical path without escapes is returned as it is, without
// allocating.
func CleanPath(raw string) (Path, error) {
	if canonical(raw) {
		return Path{raw, raw}, nil
	}
	return clean(raw)
}

// canonical reports whether raw is canonical and has no escapes: its
// decoded and escaped forms are raw itself.
func canonical(raw string) bool {
	if raw == "" || raw[0] != '/' {
		return false
	}
	seg := 1 // where the current segment starts
	for i := 1; i < len(raw); i++ {
		switch pathClass[raw[i]] {
		case plain:
		case slash:
			if s := raw[seg:i]; s == "" || s == "." || s == ".." {
				return false
			}
			seg = i + 1
		default:
			return false
		}
	}
	s := raw[seg:]
	return s != "." && s != ".."
}

// clean is CleanPath for a path that is not canonical or has escapes.
func clean(raw string) (Path, error) {
	if raw == "" || raw[0] != '/' {
		return Path{}, errNotAbsolute
	}
	dec := make([]byte, 0, len(raw))
	esc := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		// raw[i] is the / that starts a segment; j is where it ends.
		j := i + 1 + strings.IndexByte(raw[i+1:], '/')
		if j == i {
			j = len(raw)
		}
		last := j == len(raw)
		d0, e0 := len(dec), len(esc)
		dec, esc = append(dec, '/'), append(esc, '/')
		for k := i + 1; k < j; k++ {
			c := raw[k]
			switch pathClass[c] {
			case plain:
				dec, esc = append(dec, c), append(esc, c)
			case encode:
				dec, esc = append(dec, c), append(esc, '%', upperHex[c>>4], upperHex[c&15])
			case backslash:
				return Path{}, errBackslash
			case nul:
				return Path{}, errNUL
			case percent:
				if k+2 >= j || !isHex(raw[k+1]) || !isHex(raw[k+2]) {
					return Path{}, errBadEscape
				}
				v := unhex(raw[k+1])<<4 | unhex(raw[k+2])
				k += 2
				switch {
				case v == '/':
					return Path{}, errSlash
				case v == '\\':
					return Path{}, errBackslash
				case v == 0:
					return Path{}, errNUL
				case unreserved[v]:
					dec, esc = append(dec, v), append(esc, v)
				default:
					dec, esc = append(dec, v), append(esc, '%', upperHex[v>>4], upperHex[v&15])
				}
			}
		}
		switch seg := dec[d0+1:]; {
		case len(seg) == 0, string(seg) == ".":
			// Dropped; the last one leaves its /, so /a/. is /a/.
			if last {
				dec, esc = dec[:d0+1], esc[:e0+1]
			} else {
				dec, esc = dec[:d0], esc[:e0]
			}
		case string(seg) == "..":
			// Dropped with the segment before it, whose / stays when
			// this is the last one: /a/b/.. is /a/.
			dec, esc = dec[:d0], esc[:e0]
			if len(dec) == 0 {
				return Path{}, errAboveRoot
			}
			dec, esc = dec[:bytes.LastIndexByte(dec, '/')], esc[:bytes.LastIndexByte(esc, '/')]
			if last {
				dec, esc = append(dec, '/'), append(esc, '/')
			}
		}
		i = j
	}
	d := string(dec)
	if bytes.Equal(dec, esc) {
		return Path{d, d}, nil
	}
	return Path{d, string(esc)}, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// withoutParams returns p as a server that drops ;parameters from every
// segment before it decodes and cleans the path reads it (Tomcat, Jetty,
// Spring): /a;v=1/b is /a/b there, and /a/..;/b is /b. With escaped, an
// escaped ; (%3B) starts parameters too, as for a server that would drop
// them after decoding.
func withoutParams(p Path, escaped bool) (Path, error) {
	var b strings.Builder
	b.Grow(len(p.Escaped))
	for s := range strings.SplitSeq(p.Escaped[1:], "/") {
		if i := strings.IndexByte(s, ';'); i >= 0 {
			s = s[:i]
		}
		if i := strings.Index(s, "%3B"); escaped && i >= 0 {
			s = s[:i]
		}
		b.WriteByte('/')
		b.WriteString(s)
	}
	return CleanPath(b.String())
}

// CheckPrefix returns nil if prefix can be a route's path prefix: a
// canonical path (as CleanPath makes them) written decoded, ending with /
// or not. Otherwise the error says what is wrong, and that the prefix
// would never match.
func CheckPrefix(prefix string) error {
	if !strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("want a path starting with /, got %q", prefix)
	}
	for i := 0; i < len(prefix); i++ {
		switch c := prefix[i]; {
		case c <= ' ' || c == 0x7f:
			return fmt.Errorf("%q has a space or control character", prefix)
		case c == '%':
			return fmt.Errorf("%q has a percent-escape: write the prefix decoded (é, not %%C3%%A9), as routes match the decoded path", prefix)
		case c == '\\':
			return fmt.Errorf(`%q has a backslash: requests with one are refused`, prefix)
		case c == ';':
			return fmt.Errorf("%q has a ;: routes do not match ;parameters", prefix)
		case c == '?' || c == '#':
			return fmt.Errorf("%q has a %c: routes match the path only", prefix, c)
		}
	}
	segs := strings.Split(strings.TrimSuffix(prefix[1:], "/"), "/")
	if prefix == "/" {
		segs = nil
	}
	for _, s := range segs {
		switch s {
		case "":
			return fmt.Errorf("%q has an empty segment (//): requests are matched with // merged into /, so it would never match", prefix)
		case ".", "..":
			return fmt.Errorf("%q has a dot segment (%s): requests are matched with dot segments removed, so it would never match", prefix, s)
		}
	}
	return nil
}

// prefixKey is the form of a route's prefix that matching uses: without
// its trailing /, so /api and /api/ are the same route.
func prefixKey(prefix string) string { return strings.TrimSuffix(prefix, "/") }

// underPrefix reports whether path is key or below it: key is a prefix of
// path ending at a segment boundary. key has no trailing / ("" is the
// root, which every path starting with / is under).
func underPrefix(path, key string) bool {
	return len(path) >= len(key) && path[:len(key)] == key && (len(path) == len(key) || path[len(key)] == '/')
}
