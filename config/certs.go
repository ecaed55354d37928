package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"
)

// maxCertFile bounds a certificate or key file: a chain of a few
// certificates is a few KiB.
const maxCertFile = 1 << 20

// LoadCertificates reads a TLS listener's certificates (key names it in
// errors, such as listeners.prod): each chain must parse, match its key
// and be valid now. The first is the default; the others are chosen by the
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
