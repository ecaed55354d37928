package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/vipswap/vipswap/acmecert"
	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/route"
	"github.com/vipswap/vipswap/wire"
)

// acmeTuning lets tests check for renewals often and renew early; zero
// values are certmagic's defaults.
var acmeTuning struct {
	renewCheck   time.Duration
	renewalRatio float64
}

// acmeListeners are the TLS listeners' certificate managers (prod,
// stage; nil without an acme block) and what their acme.ca_root trusts
// (nil: the system's roots).
type acmeListeners struct {
	managers [2]*acmecert.Manager
	roots    [2]*x509.CertPool
}

// loadACMERoots reads the acme blocks' ca_root files, before anything is
// bound.
func (n *node) loadACMERoots() error {
	for l, c := range []config.Listener{n.initial.Listeners.Prod, n.initial.Listeners.Stage} {
		if c.TLS != nil {
			roots, err := config.LoadACMERoots([]string{"listeners.prod", "listeners.stage"}[l], c.TLS.ACME)
			if err != nil {
				return err
			}
			n.acme.roots[l] = roots
		}
	}
	return nil
}

// openACME makes the certificate managers of the listeners with an acme
// block, over storage beside the state (a directory next to the state
// file, or etcd in a cluster). They talk to the CA once started.
func (n *node) openACME() error {
	confs := [2]config.Listener{n.initial.Listeners.Prod, n.initial.Listeners.Stage}
	lns := [2]string{n.prodLn.Addr().String(), n.stageLn.Addr().String()}
	var storage certmagic.Storage
	for l, c := range confs {
		if c.TLS == nil || c.TLS.ACME == nil {
			continue
		}
		name := []string{"listeners.prod", "listeners.stage"}[l]
		var err error
		if storage == nil {
			if storage, err = n.acmeStorage(); err != nil {
				return err
			}
		}
		// HTTP-01 goes to the cleartext listener, when there is one.
		http01 := ""
		for other, oc := range confs {
			if oc.TLS == nil {
				http01 = lns[other]
			}
		}
		o := acmecert.Options{
			Listener: name, Email: c.TLS.ACME.Email, CA: c.TLS.ACME.Directory(), Roots: n.acme.roots[l],
			Names: c.TLS.ACME.Names, Storage: storage, HTTPAddr: http01, TLSAddr: lns[l], Logger: n.log,
			Fallback: len(c.TLS.Certs) > 0,
		}
		o.RenewCheck, o.RenewalRatio = acmeTuning.renewCheck, acmeTuning.renewalRatio
		m, err := acmecert.New(o)
		if err != nil {
			return fmt.Errorf("%s.tls.acme: %w", name, err)
		}
		n.acme.managers[l] = m
		n.onClose(m.Close)
		if conf := n.certs[l].Load(); conf != nil {
			n.certs[l].Store(n.withACME(route.Listener(l), conf))
		}
	}
	return nil
}

// acmeStorage is where certificates, keys, accounts and locks are kept:
// etcd under PREFIX/acme/ in a cluster, else the directory
// STATE_FILE.acme (mode 0700).
func (n *node) acmeStorage() (certmagic.Storage, error) {
	if n.st.etcd != nil {
		return &acmecert.EtcdStorage{Client: n.st.etcd.Client(), Prefix: n.st.etcd.Prefix() + "acme/", Timeout: n.initial.State.Etcd.RequestTimeout}, nil
	}
	dir := n.initial.State.LocalBase() + ".acme"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme storage: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme storage: %w", err)
	}
	return &certmagic.FileStorage{Path: dir}, nil
}

// startACME starts obtaining and renewing, in the background, and lets
// the cleartext listeners answer HTTP-01 validations.
func (n *node) startACME() {
	if n.acme.managers[route.Prod] == nil && n.acme.managers[route.Stage] == nil {
		return
	}
	n.px.SetChallenges(func(w http.ResponseWriter, r *http.Request) bool {
		for _, m := range n.acme.managers {
			if m != nil && m.HandleHTTPChallenge(w, r) {
				return true
			}
		}
		return false
	})
	for _, m := range n.acme.managers {
		if m != nil {
			m.Start()
		}
	}
}

// handshakeConfig is the TLS configuration for a handshake on listener
// l: the certificates in force, or an ACME server's TLS-ALPN-01
// validation's.
func (n *node) handshakeConfig(l route.Listener, hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if m := n.acme.managers[l]; m != nil {
		if c := m.ChallengeConfig(hello); c != nil {
			return c, nil
		}
	}
	return n.certs[l].Load(), nil
}

// withACME makes conf, listener l's, serve its ACME certificates: for the
// ACME names, the certificate obtained (until there is one, the files'
// when there are files, else the handshake fails); for other names the
// files'. A client without SNI gets the first file, or with no files the
// first ACME name's certificate.
func (n *node) withACME(l route.Listener, conf *tls.Config) *tls.Config {
	m := n.acme.managers[l]
	if m == nil {
		return conf
	}
	files := len(conf.Certificates) > 0
	conf.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := hello.ServerName
		if name == "" && !files {
			name = m.Default()
		}
		if !m.Manages(name) {
			if !files {
				return nil, fmt.Errorf("no certificate for %q", name)
			}
			return nil, nil // the files'
		}
		c, err := m.Certificate(name)
		if err != nil && files {
			return nil, nil
		}
		return c, err
	}
	return conf
}

// acmeStatus lists listener l's ACME certificates for status.
func (n *node) acmeStatus(l route.Listener) []wire.CertificateStatus {
	m := n.acme.managers[l]
	if m == nil {
		return nil
	}
	var out []wire.CertificateStatus
	for _, leaf := range m.Leaves() {
		out = append(out, wire.CertificateStatus{Names: slices.Clone(leaf.DNSNames), NotAfter: leaf.NotAfter.UTC()})
	}
	return out
}
