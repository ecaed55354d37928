package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strings"
)

// maxACMENames bounds a listener's acme.names: each is one certificate to
// obtain and renew.
const maxACMENames = 100

// acme checks a listener's acme block: a contact address, an https
// directory URL, and DNS names the HTTP-01 and TLS-ALPN-01 challenges can
// prove (no IP addresses, no wildcards: those need DNS-01).
func (v *validator) acme(key string, a *ACME) {
	switch {
	case a.Email == "":
		v.fail(key+".email", "want the ACME account's contact address, such as ops@example.com")
	case !emailShape(a.Email):
		v.fail(key+".email", fmt.Sprintf("%q is not an email address (want name@domain, nothing else)", a.Email))
	}
	if a.CA != "" {
		if err := directoryURL(a.CA); err != nil {
			v.fail(key+".ca", fmt.Sprintf("%q: %v", a.CA, err))
		}
	}
	if len(a.Names) == 0 {
		v.fail(key+".names", "want at least one DNS name to obtain a certificate for")
	}
	if len(a.Names) > maxACMENames {
		v.fail(key+".names", fmt.Sprintf("%d names: at most %d", len(a.Names), maxACMENames))
		return
	}
	seen := map[string]bool{}
	for i, n := range a.Names {
		k := fmt.Sprintf("%s.names[%d]", key, i)
		if err := acmeName(n); err != nil {
			v.fail(k, fmt.Sprintf("%q: %v", n, err))
			continue
		}
		if seen[strings.ToLower(n)] {
			v.fail(k, fmt.Sprintf("%q is listed twice", n))
		}
		seen[strings.ToLower(n)] = true
	}
}

// emailShape reports whether s is a bare address, local@domain, with a
// domain of DNS labels.
func emailShape(s string) bool {
	if len(s) > 254 || strings.ContainsAny(s, " \t\r\n<>\"") {
		return false
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Address != s || addr.Name != "" {
		return false
	}
	local, domain, ok := strings.Cut(s, "@")
	return ok && local != "" && dnsName(domain) == nil
}

// directoryURL checks an ACME directory URL: https, a host, nothing else
// odd.
func directoryURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil || len(s) > 2048:
		return fmt.Errorf("not a URL")
	case u.Scheme != "https":
		return fmt.Errorf("want an https:// URL (ACME speaks HTTPS only)")
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("want a host")
	case u.User != nil:
		return fmt.Errorf("want no user or password in the URL")
	case u.Fragment != "":
		return fmt.Errorf("want no #fragment")
	}
	return nil
}

// acmeName checks a name to obtain a certificate for by HTTP-01 or
// TLS-ALPN-01.
func acmeName(n string) error {
	switch {
	case net.ParseIP(strings.Trim(n, "[]")) != nil:
		return fmt.Errorf("an IP address: want a DNS name (certificates for addresses are not supported)")
	case strings.Contains(n, "*"):
		return fmt.Errorf("a wildcard needs the DNS-01 challenge, which vipswap does not support: list each name")
	case strings.HasSuffix(n, "."):
		return fmt.Errorf("want the name without a trailing dot")
	}
	if err := dnsName(n); err != nil {
		return err
	}
	if !strings.Contains(n, ".") {
		return fmt.Errorf("want a fully qualified name, such as www.example.com")
	}
	return nil
}

// dnsName checks s is a DNS name of letters, digits and hyphens: labels of
// 1 to 63 characters, not starting or ending with a hyphen, 253 in all,
// the last not all digits.
func dnsName(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("want a DNS name of 1 to 253 characters")
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("want labels of 1 to 63 characters between dots")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q: want letters, digits and hyphens only", l)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("the last label is all digits: not a DNS name")
	}
	return nil
}

// LoadACMERoots reads a listener's acme.ca_root (key names it in errors,
// such as listeners.prod): the certificates trusted, besides the system's,
// to sign the ACME directory's HTTPS certificate. Nil when none is set.
func LoadACMERoots(key string, a *ACME) (*x509.CertPool, error) {
	if a == nil || a.CARoot == "" {
		return nil, nil
	}
	raw, err := readBounded(a.CARoot)
	if err != nil {
		return nil, fmt.Errorf("%s.tls.acme.ca_root: %w", key, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("%s.tls.acme.ca_root: %s holds no PEM certificate", key, a.CARoot)
	}
	return pool, nil
}
