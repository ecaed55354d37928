package main

import (
	"fmt"
	"strings"
	"unicode"
)

// printable returns s with every character that could drive a terminal
// shown as an escape instead: C0 and C1 controls and DEL (\x1b starts the
// sequences that move the cursor, recolour, retitle or rewrite the screen),
// and Unicode format and separator controls (U+202E reverses the text that
// follows). Reasons and errors come from whoever called the API; printed
// raw, a reason could hide or forge history lines.
func printable(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x100 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}
