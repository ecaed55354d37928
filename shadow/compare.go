package shadow

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// diff is where two answers differ first, and the values found there.
type diff struct {
	where, prod, target string
}

// alwaysIgnored are response headers that differ between any two answers
// or describe the connection, never the version.
var alwaysIgnored = map[string]bool{
	"Date": true, "Server": true, "Content-Length": true, "Connection": true, "Keep-Alive": true,
	"Transfer-Encoding": true, "Trailer": true, "Via": true, "Age": true, "Set-Cookie": true,
	"Content-Type": true, // compared on its own
	// A version's own validators: a new build may tag the same content
	// anew (the 304 rule in compare says the same).
	"Etag": true, "Last-Modified": true,
}

// compare returns where tgt differs from prod, or nil when they are the
// same: status class and code, content type, the other headers but the
// ignored, then the body (as JSON without the ignored fields when both are
// JSON and kept whole, else byte for byte or by hash).
func compare(prod, tgt *answer, ru *run) *diff {
	if prod.status == http.StatusNotModified && (tgt.status == http.StatusOK || tgt.status == http.StatusNotModified) {
		// A conditional request prod's version found current: the
		// target's validators (ETag, Last-Modified) are its own, so its
		// full answer or its own 304 is no difference, and there is no
		// body of prod's to compare with (counted as body_uncompared).
		return nil
	}
	if prod.status/100 != tgt.status/100 {
		return &diff{"status class", strconv.Itoa(prod.status), strconv.Itoa(tgt.status)}
	}
	if prod.status != tgt.status {
		return &diff{"status", strconv.Itoa(prod.status), strconv.Itoa(tgt.status)}
	}
	pt, tt := mediaType(prod.header), mediaType(tgt.header)
	if pt != tt {
		return &diff{"content-type", pt, tt}
	}
	if d := compareHeaders(prod.header, tgt.header, ru.ignoreHeaders); d != nil {
		return d
	}
	if prod.over != tgt.over {
		// One body above CompareLimit, the other not: lengths that differ.
		return &diff{where: "body length", prod: length(prod), target: length(tgt)}
	}
	if prod.over {
		return nil // both too long to compare: status and type alone (counted)
	}
	if prod.whole() && tgt.whole() {
		return compareBodies(pt, prod.header.Get("Content-Encoding"), prod.kept, tgt.kept, ru)
	}
	if prod.n != tgt.n {
		return &diff{where: "body length", prod: strconv.FormatInt(prod.n, 10), target: strconv.FormatInt(tgt.n, 10)}
	}
	if prod.hash.Sum64() != tgt.hash.Sum64() {
		return &diff{where: "body (hash)"}
	}
	return nil
}

// compareBodies compares two bodies kept whole, sent with the same
// Content-Encoding enc: byte for byte first; gzip'd ones that differ
// (another compression level, another timestamp in the gzip header) by
// what they decompress to; JSON (media type pt) without the ignored
// fields.
func compareBodies(pt, enc string, a, b []byte, ru *run) *diff {
	if bytes.Equal(a, b) {
		return nil
	}
	where := "byte"
	if strings.EqualFold(strings.TrimSpace(enc), "gzip") {
		da, ea := gunzip(a)
		db, eb := gunzip(b)
		if ea == nil && eb == nil {
			if bytes.Equal(da, db) {
				return nil
			}
			a, b, where = da, db, "decompressed byte"
		}
	}
	if isJSON(pt) {
		var x, y any
		ex, ey := decode(a, &x), decode(b, &y)
		if ex == nil && ey == nil {
			return jsonDiff("$", x, y, ru.ignoreFields)
		}
		if ex == nil || ey == nil {
			return &diff{where: "body (JSON on one side only)"}
		}
	}
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return &diff{where: fmt.Sprintf("%s %d", where, i), prod: around(a, i), target: around(b, i)}
}

// maxGunzip bounds what a kept gzip'd body is decompressed to for a
// comparison: a body that inflates beyond it is compared as sent.
const maxGunzip = 1 << 20

// gunzip decompresses a gzip'd body, up to maxGunzip.
func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(zr, maxGunzip+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxGunzip {
		return nil, errors.New("inflates beyond the limit")
	}
	return out, nil
}

// length says how long an answer's body is, or that it is above the
// compare limit.
func length(a *answer) string {
	if a.over {
		return "above " + strconv.FormatInt(a.limit, 10)
	}
	return strconv.FormatInt(a.n, 10)
}

func around(b []byte, i int) string {
	end := min(len(b), i+16)
	if i >= len(b) {
		return "(end)"
	}
	return strconv.Quote(string(b[i:end]))
}

func mediaType(h http.Header) string {
	v := h.Get("Content-Type")
	if v == "" {
		return ""
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(v))
	}
	if cs := params["charset"]; cs != "" {
		return mt + "; charset=" + strings.ToLower(cs)
	}
	return mt
}

func isJSON(mt string) bool {
	mt, _, _ = strings.Cut(mt, ";")
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func decode(b []byte, v *any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("more than one JSON value")
	}
	return nil
}

func compareHeaders(p, t http.Header, ignore map[string]bool) *diff {
	names := make([]string, 0, len(p)+len(t))
	for k := range p {
		names = append(names, k)
	}
	for k := range t {
		if _, ok := p[k]; !ok {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		if alwaysIgnored[k] || ignore[k] {
			continue
		}
		a, b := strings.Join(p[k], ", "), strings.Join(t[k], ", ")
		if a != b {
			return &diff{"header " + k, short(a), short(b)}
		}
	}
	return nil
}

func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// fieldSet are the JSON fields a comparison leaves out: names at any
// depth, and paths from the root ("$.a.b", arrays passed through).
type fieldSet struct {
	names map[string]bool
	paths map[string]bool
}

func newFieldSet(fields []string) fieldSet {
	fs := fieldSet{names: map[string]bool{}, paths: map[string]bool{}}
	for _, f := range fields {
		if p, ok := strings.CutPrefix(f, "$."); ok {
			fs.paths["$."+p] = true
		} else {
			fs.names[f] = true
		}
	}
	return fs
}

func (fs fieldSet) ignored(key, plain string) bool { return fs.names[key] || fs.paths[plain] }

// jsonDiff returns the first place where b differs from a, walking objects
// by sorted keys; path is the JSON path so far.
func jsonDiff(path string, a, b any, fs fieldSet) *diff {
	return walk(path, path, a, b, fs)
}

// walk is jsonDiff with plain, the path without array indices, which the
// ignored paths are matched against.
func walk(path, plain string, a, b any, fs fieldSet) *diff {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return &diff{path, kind(a), kind(b)}
		}
		keys := make([]string, 0, len(av)+len(bv))
		for k := range av {
			keys = append(keys, k)
		}
		for k := range bv {
			if _, ok := av[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p, pl := path+"."+k, plain+"."+k
			if fs.ignored(k, pl) {
				continue
			}
			x, inA := av[k]
			y, inB := bv[k]
			switch {
			case !inA:
				return &diff{p, "(absent)", value(y)}
			case !inB:
				return &diff{p, value(x), "(absent)"}
			}
			if d := walk(p, pl, x, y, fs); d != nil {
				return d
			}
		}
		return nil
	case []any:
		bv, ok := b.([]any)
		if !ok {
			return &diff{path, kind(a), kind(b)}
		}
		for i := range min(len(av), len(bv)) {
			if d := walk(fmt.Sprintf("%s[%d]", path, i), plain, av[i], bv[i], fs); d != nil {
				return d
			}
		}
		if len(av) != len(bv) {
			return &diff{path + ".length", strconv.Itoa(len(av)), strconv.Itoa(len(bv))}
		}
		return nil
	default:
		if a != b && !sameNumber(a, b) {
			return &diff{path, value(a), value(b)}
		}
		return nil
	}
}

func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "(object)"
	case []any:
		return "(array)"
	}
	return value(v)
}

func value(v any) string {
	b, _ := json.Marshal(v)
	return short(string(b))
}

// sameNumber reports whether a and b are JSON numbers of the same value
// written differently (1.0 and 1, 1e2 and 100), compared exactly.
func sameNumber(a, b any) bool {
	x, ok := a.(json.Number)
	y, ok2 := b.(json.Number)
	if !ok || !ok2 {
		return false
	}
	rx, ok := new(big.Rat).SetString(string(x))
	ry, ok2 := new(big.Rat).SetString(string(y))
	return ok && ok2 && rx.Cmp(ry) == 0
}
