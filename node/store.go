package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/vipswap/vipswap/cluster"

	"github.com/vipswap/vipswap/config"
	"github.com/vipswap/vipswap/state"
	"github.com/vipswap/vipswap/store"
	"github.com/vipswap/vipswap/store/bolt"
	"github.com/vipswap/vipswap/store/etcd"
)

// openedStore is the state store a node runs on, and what cluster mode
// adds to it.
type openedStore struct {
	store.Store
	etcd *etcd.Store // nil with the state file
}

// openStore opens the store the configuration names: the state file, or
// etcd (which it does not wait for: an unreachable etcd shows in status).
func openStore(cfg *config.Config, log *slog.Logger) (*openedStore, error) {
	keep := store.Retention{MaxEntries: cfg.State.History.MaxEntries, MaxAge: cfg.State.History.MaxAge}
	e := cfg.State.Etcd
	if e == nil {
		st, err := bolt.OpenWith(cfg.State.Path, bolt.Options{Retention: keep})
		if err != nil {
			return nil, err
		}
		if st.Created() {
			log.Warn("new state: the state file holds no state yet, so it is seeded from the configuration's active slot",
				"path", cfg.State.Path, "active", cfg.Active)
		}
		return &openedStore{Store: st}, nil
	}
	opts := etcd.Options{
		Endpoints: e.Endpoints, Prefix: e.Prefix, DialTimeout: e.DialTimeout, RequestTimeout: e.RequestTimeout,
		Username: e.Username, Retention: keep, LocalCopy: e.LocalCopy,
	}
	if e.PasswordFile != "" {
		raw, err := config.ReadBounded(e.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("state.etcd.password_file: %w", err)
		}
		opts.Password = strings.TrimSpace(string(raw))
	}
	if e.TLS.CA != "" || e.TLS.Cert != "" {
		t, err := etcdTLS(e.TLS)
		if err != nil {
			return nil, err
		}
		opts.TLS = t
	}
	st, err := etcd.Open(opts)
	if err != nil {
		return nil, err
	}
	log.Info("state in etcd", "endpoints", strings.Join(e.Endpoints, ","), "prefix", e.Prefix, "local_copy", e.LocalCopy)
	return &openedStore{Store: st, etcd: st}, nil
}

// etcdTLS builds the TLS configuration for reaching etcd.
func etcdTLS(c config.EtcdTLS) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pem, err := config.ReadBounded(c.CA)
		if err != nil {
			return nil, fmt.Errorf("state.etcd.tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("state.etcd.tls.ca: %s holds no PEM certificate", c.CA)
		}
		t.RootCAs = pool
	}
	if c.Cert != "" {
		certPEM, err := config.ReadBounded(c.Cert)
		if err != nil {
			return nil, fmt.Errorf("state.etcd.tls.cert: %w", err)
		}
		keyPEM, err := config.ReadBounded(c.Key)
		if err != nil {
			return nil, fmt.Errorf("state.etcd.tls.key: %w", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("state.etcd.tls: %w", err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	return t, nil
}

// lastState returns the stored state, or in cluster mode with etcd out of
// reach the local copy of the last one this node saw; the zero state when
// there is none yet.
func (s *openedStore) lastState(ctx context.Context) state.State {
	st, _, err := s.Load(ctx)
	if errors.Is(err, store.ErrUnavailable) && s.etcd != nil {
		st, _, _, _ = s.etcd.LastSeen()
	}
	return st
}

// localCopy is control.Config.LocalCopy: the etcd store's in cluster
// mode, nil with the state file.
func (s *openedStore) localCopy() cluster.LocalCopy {
	if s.etcd == nil {
		return nil
	}
	return s.etcd
}

// where names the store in messages: the state file, or etcd and the
// prefix.
func (s *openedStore) where(cfg *config.Config) string {
	if s.etcd != nil {
		return s.etcd.Describe()
	}
	return cfg.State.Path
}

// nodeName names this vipswap in a cluster's status: host name and admin
// address, unique even for several nodes on one machine.
func nodeName(admin string) string {
	host, err := os.Hostname()
	if err != nil {
		host = "vipswap"
	}
	return host + "@" + admin
}

// OpenEtcd opens the etcd store cfg names, for the verbs that work on a
// cluster's state without a running node. It does not wait for etcd.
func OpenEtcd(cfg *config.Config) (*etcd.Store, error) {
	if cfg.State.Etcd == nil {
		return nil, errors.New("the configuration keeps its state in a file, not in etcd (state.etcd)")
	}
	st, err := openStore(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return st.etcd, nil
}
