// Package acmecert obtains and renews a TLS listener's certificates from
// an ACME CA (Let's Encrypt by default) with certmagic: the HTTP-01
// challenge answered by the cleartext listeners, TLS-ALPN-01 by the TLS
// listener itself. Certificates, keys and locks live in a
// certmagic.Storage: files beside the state file, or etcd in a cluster
// (EtcdStorage), so that a cluster obtains one certificate per name.
//
// Nothing here waits for the CA: a Manager serves what storage holds, and
// obtains the rest in the background; until a name has its certificate,
// its handshakes fail (or take the files' certificates, see node).
package acmecert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// Options configure a Manager.
type Options struct {
	// Listener names the listener in logs and errors, such as
	// listeners.prod.
	Listener string
	// Email is the ACME account's contact; CA its directory URL.
	Email, CA string
	// Roots, when set, are trusted to sign the CA directory's HTTPS
	// certificate (nil: the system's).
	Roots *x509.CertPool
	// Names are the DNS names, one certificate each.
	Names []string
	// Storage keeps certificates, keys, accounts and locks.
	Storage certmagic.Storage
	// HTTPAddr is the address of a cleartext listener that hands
	// /.well-known/acme-challenge/ to HandleHTTPChallenge; empty turns
	// HTTP-01 off.
	HTTPAddr string
	// TLSAddr is the TLS listener's address, where ChallengeConfig
	// answers TLS-ALPN-01.
	TLSAddr string
	// Logger receives what happens (issuance, renewal, failures).
	Logger *slog.Logger
	// RenewCheck is how often certificates are looked at for renewal;
	// zero means certmagic's default (10 minutes).
	RenewCheck time.Duration
	// RenewalRatio is the part of a certificate's lifetime left when it
	// is renewed; zero means certmagic's default (1/3).
	RenewalRatio float64
	// OnEvent, when set, is told certmagic's events (cert_obtained,
	// cert_failed, ...).
	OnEvent func(event string, data map[string]any)
	// Fallback says the listener has certificate files, which serve a
	// name until its certificate is obtained (the log says so).
	Fallback bool
}

// Manager obtains, renews and serves one listener's ACME certificates.
type Manager struct {
	opts   Options
	names  map[string]bool
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	chal   *tls.Config // answers TLS-ALPN-01

	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	done    chan struct{} // closed when Start's goroutine ends

	mu          sync.Mutex
	noCert      time.Time                   // when a handshake without a certificate was last logged
	refusedALPN time.Time                   // when a TLS-ALPN-01 handshake refused was last logged
	lookups     map[string]*challengeLookup // by acme name: reads of the storage for HTTP-01
}

// limited logs msg as a warning unless it was logged, by last, less than
// a minute ago.
func (m *Manager) limited(last *time.Time, msg string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Since(*last) < time.Minute {
		return
	}
	*last = time.Now()
	m.opts.Logger.Warn(msg, append([]any{"listener", m.opts.Listener}, args...)...)
}

// New returns a Manager for o; it talks to nobody until Start.
func New(o Options) (*Manager, error) {
	if len(o.Names) == 0 {
		return nil, fmt.Errorf("%s.tls.acme.names: none", o.Listener)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := zapToSlog(o.Logger.With("listener", o.Listener))
	issuer := certmagic.ACMEIssuer{
		CA: o.CA, Email: o.Email, Agreed: true, TrustedRoots: o.Roots, Logger: log,
		DisableHTTPChallenge: o.HTTPAddr == "",
	}
	// certmagic starts its own challenge servers unless the address is
	// taken: it is, by vipswap's listeners, which pass the challenges on.
	// (It has one ListenHost for both; a port vipswap holds on any
	// address refuses a bind on another, so only listeners on two
	// different specific addresses would let it start one, and that one
	// answers challenges only.)
	host, port, err := hostPort(o.TLSAddr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Listener, err)
	}
	issuer.ListenHost, issuer.AltTLSALPNPort = host, port
	if o.HTTPAddr != "" {
		if issuer.ListenHost, issuer.AltHTTPPort, err = hostPort(o.HTTPAddr); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Listener, err)
		}
	}
	m := &Manager{opts: o, names: map[string]bool{}, done: make(chan struct{})}
	for _, n := range o.Names {
		m.names[normalize(n)] = true
	}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: o.RenewCheck,
		OCSPCheckInterval:  time.Hour,
		Logger:             log,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage:            o.Storage,
		RenewalWindowRatio: o.RenewalRatio,
		OCSP:               certmagic.OCSPConfig{DisableStapling: true},
		Logger:             log,
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			if o.OnEvent != nil {
				o.OnEvent(event, data)
			}
			return nil
		},
	})
	m.issuer = certmagic.NewACMEIssuer(m.magic, issuer)
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	// TLS-ALPN-01 handshakes are answered by a configuration of their
	// own whose logs are at debug level: anyone may offer acme-tls/1,
	// and certmagic logs each refusal as an error. Ours are limited.
	quiet := certmagic.New(m.cache, certmagic.Config{
		Storage: o.Storage, Logger: quietZap(o.Logger.With("listener", o.Listener)),
		OCSP: certmagic.OCSPConfig{DisableStapling: true},
	})
	quiet.Issuers = []certmagic.Issuer{m.issuer}
	m.chal = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{acmez.ACMETLS1Protocol},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			var c *tls.Certificate
			var err error
			name := normalize(hello.ServerName)
			if _, ok := certmagic.GetACMEChallenge(name); ok {
				c, err = quiet.GetCertificate(hello) // this node's own: in memory
			} else if ctx := hello.Context(); ctx != nil && m.lookupBegin(ctx, name) {
				// Another node's, read from the storage as for HTTP-01:
				// anyone may offer acme-tls/1.
				c, err = quiet.GetCertificate(hello)
				m.lookupEnd(name, err == nil)
			} else {
				err = errors.New("no validation pending")
			}
			if err != nil {
				m.limited(&m.refusedALPN, "acme: a TLS-ALPN-01 handshake for a name with no validation pending was refused",
					"name", hello.ServerName, "remote", hello.Conn.RemoteAddr().String())
				return nil, err
			}
			o.Logger.Info("acme: answered a validation", "listener", o.Listener, "name", hello.ServerName, "challenge", "tls-alpn-01")
			return c, nil
		},
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

func hostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}

// Start loads what storage holds and obtains or renews the rest in the
// background; it does not wait for the CA.
func (m *Manager) Start() {
	m.started = true
	go func() {
		defer close(m.done)
		for _, name := range m.opts.Names {
			m.discardDamaged(normalize(name))
		}
		if m.ctx.Err() != nil {
			return
		}
		if err := m.magic.ManageAsync(m.ctx, m.opts.Names); err != nil {
			m.opts.Logger.Error("acme: cannot manage the certificates", "listener", m.opts.Listener, "err", err)
		}
	}()
}

// discardDamaged removes name's certificate from storage when it does
// not load (truncated, not PEM, a key that does not match), so that a new
// one is obtained: certmagic would otherwise stop at it. It holds
// certmagic's issuance lock, so no other node writes the name meanwhile.
func (m *Manager) discardDamaged(name string) {
	ctx, st, ik := m.ctx, m.opts.Storage, m.issuer.IssuerKey()
	certKey, keyKey := certmagic.StorageKeys.SiteCert(ik, name), certmagic.StorageKeys.SitePrivateKey(ik, name)
	lock := "issue_cert_" + name
	if err := st.Lock(ctx, lock); err != nil {
		return // certmagic takes it again, and says why it cannot
	}
	defer st.Unlock(context.Background(), lock)
	certPEM, err := st.Load(ctx, certKey)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		return
	}
	keyPEM, err := st.Load(ctx, keyKey)
	if err == nil {
		err = wholeChain(certPEM)
	}
	if err == nil {
		_, err = tls.X509KeyPair(certPEM, keyPEM)
	}
	if err == nil {
		return
	}
	m.opts.Logger.Error("acme: the stored certificate is damaged; it is removed and a new one obtained",
		"listener", m.opts.Listener, "name", name, "storage", fmt.Sprint(st), "err", err)
	for _, k := range []string{certKey, keyKey, certmagic.StorageKeys.SiteMeta(ik, name)} {
		if err := st.Delete(ctx, k); err != nil {
			m.opts.Logger.Error("acme: could not remove the damaged certificate", "key", k, "err", err)
		}
	}
}

// wholeChain checks that a stored chain is PEM certificates from end to
// end: a truncated file may still start with a whole leaf, and would
// be served without its intermediates.
func wholeChain(chain []byte) error {
	rest, n := chain, 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("a %s block in the chain", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return err
		}
		n++
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return fmt.Errorf("the chain ends with %d bytes that are no whole PEM block (truncated?)", len(bytes.TrimSpace(rest)))
	}
	if n == 0 {
		return fmt.Errorf("no certificate in the chain")
	}
	return nil
}

// Close stops obtaining and renewing. Call Start and Close from one
// goroutine.
func (m *Manager) Close() {
	m.cancel()
	if m.started {
		<-m.done
	}
	m.cache.Stop()
}

// Manages reports whether name (as a client sends it in SNI) is one of
// the Manager's.
func (m *Manager) Manages(name string) bool { return m.names[normalize(name)] }

// Default returns the first name, served to clients that send no SNI when
// the listener has no certificate files.
func (m *Manager) Default() string { return m.opts.Names[0] }

// Certificate returns name's certificate, or an error when it has none
// yet (not obtained, or expired). It reads memory only.
func (m *Manager) Certificate(name string) (*tls.Certificate, error) {
	if c := m.best(normalize(name)); c != nil {
		return &c.Certificate, nil
	}
	if m.opts.Fallback {
		m.limited(&m.noCert, "acme: no certificate yet: the certificate files serve the name until it is obtained (logged once a minute)", "name", name)
	} else {
		m.limited(&m.noCert, "acme: no certificate yet: handshakes for the name fail until it is obtained (logged once a minute)", "name", name)
	}
	return nil, fmt.Errorf("%s: no certificate for %s yet", m.opts.Listener, name)
}

// best is the cached certificate for name that is valid now and expires
// last, or nil.
func (m *Manager) best(name string) *certmagic.Certificate {
	var best *certmagic.Certificate
	now := time.Now()
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if c.Leaf == nil || now.After(c.Leaf.NotAfter) || now.Before(c.Leaf.NotBefore) {
			continue
		}
		if best == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best = &c
		}
	}
	return best
}

// Leaves returns the certificates served now, one per name that has one,
// in the order of Names.
func (m *Manager) Leaves() []*x509.Certificate {
	var out []*x509.Certificate
	for _, n := range m.opts.Names {
		if c := m.best(normalize(n)); c != nil && !slices.Contains(out, c.Leaf) {
			out = append(out, c.Leaf)
		}
	}
	return out
}

// ChallengeConfig returns the TLS configuration answering hello when it is
// an ACME server's TLS-ALPN-01 validation for one of the names (only the
// acme-tls/1 protocol offered), else nil.
func (m *Manager) ChallengeConfig(hello *tls.ClientHelloInfo) *tls.Config {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol && m.Manages(hello.ServerName) {
		return m.chal
	}
	return nil
}

// HandleHTTPChallenge answers r when it is an ACME server's HTTP-01
// validation for one of the names with a challenge pending (here or, with
// shared storage, on another node), and reports whether it did; anything
// else is left alone.
func (m *Manager) HandleHTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	if !certmagic.LooksLikeHTTPChallenge(r) {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !m.Manages(host) {
		return false
	}
	host = normalize(host)
	if _, ok := certmagic.GetACMEChallenge(host); ok {
		return m.issuer.HandleHTTPChallenge(w, r) // this node's own: in memory
	}
	// Another node's, if any, is in the storage (etcd in a cluster), and
	// anyone may send this request: so a name's storage is read by one
	// request at a time, and not at all for challengeMissTTL after a read
	// found nothing. A CA's validations (several at once, from its
	// vantage points) wait for each other and each finds the challenge.
	if !m.lookupBegin(r.Context(), host) {
		return false
	}
	handled := m.issuer.HandleHTTPChallenge(w, r)
	m.lookupEnd(host, handled)
	return handled
}

// challengeMissTTL is how long a storage read that found no HTTP-01
// challenge for a name is believed. A challenge another node stores after
// such a read is found this much later at most: long before a CA gives up.
const challengeMissTTL = 250 * time.Millisecond

// challengeLookup is the state of a name's reads of the storage for an
// HTTP-01 challenge.
type challengeLookup struct {
	busy chan struct{} // closed when the read under way ends; nil when none is
	miss time.Time     // when a read last found none
}

// lookupBegin waits until no other request reads the storage for host's
// challenge, and reports whether this one may: not when a read found none
// less than challengeMissTTL ago, nor when ctx ends first.
func (m *Manager) lookupBegin(ctx context.Context, host string) bool {
	for {
		m.mu.Lock()
		if m.lookups == nil {
			m.lookups = map[string]*challengeLookup{}
		}
		l := m.lookups[host]
		if l == nil {
			l = &challengeLookup{}
			m.lookups[host] = l
		}
		if !l.miss.IsZero() && time.Since(l.miss) < challengeMissTTL {
			m.mu.Unlock()
			return false
		}
		if busy := l.busy; busy != nil {
			m.mu.Unlock()
			select {
			case <-busy:
				continue
			case <-ctx.Done():
				return false
			}
		}
		l.busy = make(chan struct{})
		m.mu.Unlock()
		return true
	}
}

// lookupEnd ends the read lookupBegin allowed; found says whether it found
// a challenge.
func (m *Manager) lookupEnd(host string, found bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.lookups[host]
	close(l.busy)
	l.busy = nil
	if found {
		l.miss = time.Time{}
	} else {
		l.miss = time.Now()
	}
}

func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
}
