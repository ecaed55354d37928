package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
)

// Token is one accepted bearer token.
type Token struct {
	// Name identifies the token in the history ("ci", "alice"); the secret
	// itself is never logged or recorded.
	Name string
	// hash is the SHA-256 of the secret: comparing fixed-size hashes in
	// constant time does not leak the secret's length.
	hash [sha256.Size]byte
}

// MinTokenLength is the shortest secret LoadTokens accepts.
const MinTokenLength = 16

// LoadTokens reads a token file: one token per line, either "SECRET" (named
// "admin") or "NAME SECRET". Blank lines and lines starting with # are
// skipped. Like ssh with a private key, it refuses a file that its group or
// others may read or write, and it refuses two names with one secret (the
// history could not tell who acted). Errors name the file and line but
// never the secret.
func LoadTokens(path string) ([]Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("admin.token_file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("admin.token_file: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("admin.token_file %s: permissions %#o are too open: the tokens must not be readable or writable by group or others (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("admin.token_file: %w", err)
	}
	var tokens []Token
	names := map[string]bool{}
	secrets := map[[sha256.Size]byte]string{} // hash -> name
	if len(data) > 1<<20 {
		return nil, fmt.Errorf("%s: %d bytes; a token file is at most 1 MiB", path, len(data))
	}
	for i, raw := range strings.Split(string(data), "\n") { // no line length limit to trip on
		n := i + 1
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		name, secret := "admin", ""
		switch len(fields) {
		case 1:
			secret = fields[0]
		case 2:
			name, secret = fields[0], fields[1]
		default:
			return nil, fmt.Errorf("%s:%d: want SECRET or NAME SECRET", path, n)
		}
		if len(secret) < MinTokenLength {
			return nil, fmt.Errorf("%s:%d: token %q is shorter than %d characters", path, n, name, MinTokenLength)
		}
		if names[name] {
			return nil, fmt.Errorf("%s:%d: token name %q is used twice", path, n, name)
		}
		names[name] = true
		hash := sha256.Sum256([]byte(secret))
		if other, ok := secrets[hash]; ok {
			return nil, fmt.Errorf("%s:%d: token %q has the same secret as token %q: give each name its own secret", path, n, name, other)
		}
		secrets[hash] = name
		tokens = append(tokens, Token{Name: name, hash: hash})
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s: no token in the file", path)
	}
	return tokens, nil
}

// TokenSet is the tokens the admin API accepts, replaced as a whole when
// the token file is read again (vipswap reload). Safe for concurrent use.
type TokenSet struct{ p atomic.Pointer[[]Token] }

// NewTokenSet returns a set holding tokens.
func NewTokenSet(tokens []Token) *TokenSet {
	s := &TokenSet{}
	s.Set(tokens)
	return s
}

// Set replaces the tokens.
func (s *TokenSet) Set(tokens []Token) { s.p.Store(&tokens) }

// Tokens returns the tokens in force.
func (s *TokenSet) Tokens() []Token {
	if s == nil {
		return nil
	}
	if p := s.p.Load(); p != nil {
		return *p
	}
	return nil
}

// Same reports whether tokens are exactly the ones in force (names and
// secrets, in order).
func (s *TokenSet) Same(tokens []Token) bool {
	return slices.Equal(s.Tokens(), tokens)
}

// authenticator decides who a request is and whether it may proceed.
type authenticator struct {
	tokens       *TokenSet
	protectReads bool
}

// check returns the request's actor and whether it is allowed. Without
// tokens everyone is "local". With tokens, changes (and reads when
// protectReads) need a valid bearer token; /healthz and /readyz never do, so
// orchestrators can probe vipswap.
func (a authenticator) check(r *http.Request) (actor string, ok bool) {
	tokens := a.tokens.Tokens()
	if len(tokens) == 0 {
		return "local", true
	}
	name, valid := match(tokens, r.Header.Get("Authorization"))
	switch {
	case valid:
		return name, true
	case r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
		return "", true
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && !a.protectReads:
		return "anonymous", true
	}
	return "", false
}

// match compares the bearer secret with every token, in constant time, and
// returns the matching token's name.
func match(tokens []Token, header string) (string, bool) {
	secret, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || secret == "" {
		return "", false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(secret)))
	name, found := "", 0
	for _, t := range tokens {
		if subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1 {
			name, found = t.Name, 1
		}
	}
	return name, found == 1
}
