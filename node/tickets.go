package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vipswap/vipswap/store"
)

// ticketSecret is the name of the TLS session ticket keys in the store.
const ticketSecret = "tls-session-ticket-keys"

// The session ticket keys rotate every ticketRotation: a new key encrypts
// new tickets, the one before it still decrypts those it encrypted, for
// one period more. So a ticket resumes a session for between one and two
// periods, as HAProxy and nginx advise (a key that lives long makes a
// stolen one read much past traffic). Each node reads the keys from the
// store every ticketRefresh, so all of a cluster's nodes use the same ones
// within that time of a rotation.
var (
	ticketRotation = 12 * time.Hour
	ticketRefresh  = time.Minute
)

// ticketKeysKept is how many keys decrypt tickets: the newest, and the
// one before it.
const ticketKeysKept = 2

// storedTicketKeys is the stored form of the keys, newest first.
type storedTicketKeys struct {
	Keys []storedTicketKey `json:"keys"`
}

type storedTicketKey struct {
	Created time.Time `json:"created"`
	Key     []byte    `json:"key"` // 32 bytes
}

// ticketKeys gives the TLS servers (the listeners', the admin API's) the
// session ticket keys kept in the store, so that a client resumes its
// session on any node of a cluster, and after a restart. Without a store
// that keeps secrets, or until the store is first read, each server makes
// and rotates its own (crypto/tls's default). The keys are never logged,
// nor shown in status, the history or the API.
type ticketKeys struct {
	log *slog.Logger

	mu    sync.Mutex
	confs []*tls.Config // the servers' configurations
	keys  [][32]byte    // in force, newest first
}

// add has conf use the shared keys (from the next refresh when none is
// read yet).
func (t *ticketKeys) add(conf *tls.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.confs = append(t.confs, conf)
	if len(t.keys) > 0 {
		conf.SetSessionTicketKeys(t.keys)
	}
}

// refresh reads the keys from st, rotating them when the newest is a
// period old (a new random key first, the oldest dropped), and gives the
// servers those in force.
func (t *ticketKeys) refresh(ctx context.Context, st store.Secrets, now time.Time) error {
	raw, err := st.UpdateSecret(ctx, ticketSecret, func(cur []byte) ([]byte, error) {
		var k storedTicketKeys
		if len(cur) > 0 {
			if err := json.Unmarshal(cur, &k); err != nil || !validTicketKeys(k) {
				t.log.Warn("the stored TLS session ticket keys are unreadable: new ones replace them (clients do a full handshake once)")
				k = storedTicketKeys{}
			}
		}
		if len(k.Keys) > 0 && now.Sub(k.Keys[0].Created) < ticketRotation {
			return cur, nil
		}
		key := make([]byte, 32)
		rand.Read(key)
		// The new key, and the one before it if it is the key of the
		// period just ended: after a stop of days, it would resume
		// tickets that old.
		kept := []storedTicketKey{{Created: now.UTC(), Key: key}}
		for _, sk := range k.Keys {
			if len(kept) < ticketKeysKept && now.Sub(sk.Created) < 2*ticketRotation {
				kept = append(kept, sk)
			}
		}
		k.Keys = kept
		return json.Marshal(k)
	})
	if err != nil {
		return err
	}
	var k storedTicketKeys
	if err := json.Unmarshal(raw, &k); err != nil {
		return err
	}
	keys := make([][32]byte, len(k.Keys))
	for i, sk := range k.Keys {
		keys[i] = [32]byte(sk.Key)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if slices.Equal(keys, t.keys) {
		return nil
	}
	if len(t.keys) > 0 {
		t.log.Info("TLS session ticket keys rotated")
	}
	t.keys = keys
	for _, c := range t.confs {
		c.SetSessionTicketKeys(keys)
	}
	return nil
}

// validTicketKeys reports whether k holds keys of the right size.
func validTicketKeys(k storedTicketKeys) bool {
	for _, sk := range k.Keys {
		if len(sk.Key) != 32 {
			return false
		}
	}
	return len(k.Keys) > 0
}

// run refreshes the keys from st at once and every ticketRefresh until
// ctx ends; a store out of reach is said once until it answers again (the
// keys in force stay).
func (t *ticketKeys) run(ctx context.Context, st store.Secrets) {
	failing := false
	tick := time.NewTicker(ticketRefresh)
	defer tick.Stop()
	for {
		err := t.refresh(ctx, st, time.Now())
		if err != nil && !failing && ctx.Err() == nil {
			t.log.Warn("could not read the TLS session ticket keys from the store; the ones in force stay", "err", err)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
