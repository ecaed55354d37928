package config

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// maxCertFile bounds a certificate or key file: a chain of a few
// certificates is a few KiB.
const maxCertFile = 1 << 20

// minRSABits is the smallest RSA key a listener's certificate may have
// (Mozilla's intermediate profile, docs/tls.md).
const minRSABits = 2048

// LoadCertificates reads a TLS listener's certificates (key names it in
// errors, such as listeners.prod): each chain must parse, match its key,
// have an RSA key of at least minRSABits if RSA, and be valid now. The first is the default; the others are chosen by the
// name a client asks for.
func LoadCertificates(key string, t *ListenerTLS) ([]tls.Certificate, error) {
	var out []tls.Certificate
	for i, c := range t.Certs {
		k := fmt.Sprintf("%s.tls.certs[%d]", key, i)
		certPEM, err := readBounded(c.Cert)
		if err != nil {
			return nil, fmt.Errorf("%s.cert: %w", k, err)
		}
		keyPEM, err := readBounded(c.Key)
		if err != nil {
			return nil, fmt.Errorf("%s.key: %w", k, err)
		}
		if encrypted(keyPEM) {
			return nil, fmt.Errorf("%s.key: %s is encrypted (it has a passphrase): give the key unencrypted, readable by vipswap alone", k, c.Key)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			if n := keyMatchesLater(certPEM, keyPEM); n > 0 {
				return nil, fmt.Errorf("%s: %s: the key in %s belongs to certificate %d of the chain, not the first: put the leaf (the server's own certificate) first", k, c.Cert, c.Key, n+1)
			}
			return nil, fmt.Errorf("%s: %s and %s: %v", k, c.Cert, c.Key, err)
		}
		leaf := pair.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return nil, fmt.Errorf("%s: %s: %v", k, c.Cert, err)
			}
			pair.Leaf = leaf
		}
		if pub, ok := leaf.PublicKey.(*rsa.PublicKey); ok && pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("%s: %s has an RSA key of %d bits: use %d bits or more, or ECDSA P-256", k, c.Cert, pub.N.BitLen(), minRSABits)
		}
		now := time.Now()
		switch {
		case now.After(leaf.NotAfter):
			return nil, fmt.Errorf("%s: %s expired on %s", k, c.Cert, leaf.NotAfter.UTC().Format(time.DateTime))
		case now.Before(leaf.NotBefore):
			return nil, fmt.Errorf("%s: %s is not valid before %s", k, c.Cert, leaf.NotBefore.UTC().Format(time.DateTime))
		}
		out = append(out, pair)
	}
	return out, nil
}

// keyMatchesLater returns the index of the certificate after the first in
// certPEM that keyPEM is the key of, or 0: a chain written in the wrong
// order, leaf not first.
func keyMatchesLater(certPEM, keyPEM []byte) int {
	var blocks []*pem.Block
	for rest := certPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			blocks = append(blocks, b)
		}
	}
	for i := 1; i < len(blocks); i++ {
		if _, err := tls.X509KeyPair(pem.EncodeToMemory(blocks[i]), keyPEM); err == nil {
			return i
		}
	}
	return 0
}

// encrypted reports whether a key file's first private key is encrypted:
// PKCS #8 "ENCRYPTED PRIVATE KEY", or the legacy "Proc-Type: 4,ENCRYPTED"
// header.
func encrypted(keyPEM []byte) bool {
	for rest := keyPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return false
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
			return true
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return false
		}
	}
}

// ReadBounded reads a small file named by the configuration (a
// certificate, a key, a CA bundle, a password) as the listeners'
// certificates are read: only a regular file of at most 1 MiB, so that a
// path naming a FIFO or a device (/dev/zero) is refused in one line
// instead of hanging or filling the memory.
func ReadBounded(path string) ([]byte, error) { return readBounded(path) }

// readBounded reads a file of at most maxCertFile bytes.
func readBounded(path string) ([]byte, error) {
	// Looked at before it is opened: opening a FIFO would wait for a
	// writer, and a device may never end.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: want a regular file of at most %d bytes", path, maxCertFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxCertFile {
		return nil, fmt.Errorf("%s: want a regular file of at most %d bytes", path, maxCertFile)
	}
	buf := make([]byte, st.Size())
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return buf, nil
}

// UpstreamTLS is a slot's TLS towards its instances, read from its files.
type UpstreamTLS struct {
	// Config verifies the instances (its RootCAs, nil for the system's;
	// ServerName, "" for each instance's host) and presents the client
	// certificate, if any. NextProtos is left for the data plane to set.
	Config *tls.Config
	// Fingerprint identifies the settings and the files' contents: two
	// loads with the same fingerprint give the same TLS, so connections
	// made with one may serve the other.
	Fingerprint string
}

// LoadUpstreamTLS reads a slot's TLS files (key names the slot in errors,
// such as slots.blue): the CA bundle must hold at least one certificate,
// the client certificate must match its key and be valid now. It returns
// nil for a slot without TLS that does not need it (protocol http1 or
// h2c); protocol h2 without a tls block gets the system's roots.
func LoadUpstreamTLS(key string, s Slot) (*UpstreamTLS, error) {
	t := s.TLS
	if t == nil {
		if s.Protocol != ProtocolH2 {
			return nil, nil
		}
		t = &SlotTLS{}
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", s.Protocol, t.ServerName)
	if t.CA != "" {
		pemData, err := readBounded(t.CA)
		if err != nil {
			return nil, fmt.Errorf("%s.tls.ca: %w", key, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("%s.tls.ca: %s holds no PEM certificate", key, t.CA)
		}
		conf.RootCAs = pool
		h.Write(pemData)
	}
	h.Write([]byte{0})
	switch {
	case t.Cert != "" && t.Key != "":
		certs, err := LoadCertificates(key, &ListenerTLS{Certs: []CertFiles{{Cert: t.Cert, Key: t.Key}}})
		if err != nil {
			// LoadCertificates names its entry .tls.certs[0]: this is .tls.
			return nil, errors.New(strings.Replace(err.Error(), key+".tls.certs[0]", key+".tls", 1))
		}
		conf.Certificates = certs
		for _, c := range certs[0].Certificate {
			h.Write(c)
		}
	case t.Cert != "" || t.Key != "":
		return nil, fmt.Errorf("%s.tls: want both cert (the client certificate) and key (its private key), or neither", key)
	}
	return &UpstreamTLS{Config: conf, Fingerprint: hex.EncodeToString(h.Sum(nil)[:12])}, nil
}

// LoadUpstreams reads every slot's TLS files (LoadUpstreamTLS), by slot
// name; slots without TLS are missing. The first error, in the file's
// slot order, is returned.
func LoadUpstreams(c *Config) (map[string]*UpstreamTLS, error) {
	out := map[string]*UpstreamTLS{}
	for _, name := range c.SlotOrder {
		u, err := LoadUpstreamTLS("slots."+name, c.Slots[name])
		if err != nil {
			return nil, err
		}
		if u != nil {
			out[name] = u
		}
	}
	return out, nil
}
