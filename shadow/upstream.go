package shadow

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/vipswap/vipswap/proxy"
)

// ways are the transports copies take to reach each slot's instances as
// prod reaches them (proxy.Options.Upstreams): HTTP/1.1 in cleartext by
// default, over TLS, h2c or h2.
type ways struct {
	mu      sync.Mutex
	bySlot  map[string]*proxy.Upstream
	clients map[string]*http.Client // by Upstream key: protocol and fingerprint
}

// SetUpstreams says how each slot's instances are reached (as the proxy's
// Options.Upstreams): copies to a slot missing there go over HTTP/1.1 in
// cleartext. Call it again when the proxy is reconfigured.
func (m *Mirror) SetUpstreams(ups map[string]*proxy.Upstream) {
	w := &m.ways
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bySlot = ups
	keep := map[string]bool{}
	for _, u := range ups {
		keep[upKey(u)] = true
	}
	for k, c := range w.clients {
		if !keep[k] {
			c.Transport.(*http.Transport).CloseIdleConnections()
			delete(w.clients, k)
		}
	}
}

func upKey(u *proxy.Upstream) string {
	if u == nil {
		return ""
	}
	return string(u.Protocol) + "/" + u.Fingerprint
}

// cleartextH1 reports whether u is plain HTTP/1.1.
func cleartextH1(u *proxy.Upstream) bool {
	return u == nil || (u.Protocol == "" || u.Protocol == proxy.HTTP1) && u.TLS == nil
}

// clientFor returns the client and URL scheme that reach slot's instances.
func (m *Mirror) clientFor(slot string) (*http.Client, string) {
	w := &m.ways
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.bySlot[slot]
	if cleartextH1(u) {
		return m.client, "http"
	}
	scheme := "https"
	if u.Protocol == proxy.H2C {
		scheme = "http"
	}
	k := upKey(u)
	if c := w.clients[k]; c != nil {
		return c, scheme
	}
	t := m.transport()
	switch u.Protocol {
	case proxy.H2C:
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	case proxy.H2:
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP2(true)
	default:
		t.Protocols = new(http.Protocols)
		t.Protocols.SetHTTP1(true)
	}
	if u.Protocol != proxy.H2C {
		conf := &tls.Config{}
		if u.TLS != nil {
			conf = u.TLS.Clone()
		}
		conf.NextProtos = nil // the transport sets ALPN by its protocols
		t.TLSClientConfig = conf
	}
	if w.clients == nil {
		w.clients = map[string]*http.Client{}
	}
	c := &http.Client{Transport: t, CheckRedirect: m.client.CheckRedirect}
	w.clients[k] = c
	return c, scheme
}

// transport returns a transport bounded as Options say.
func (m *Mirror) transport() *http.Transport {
	o := m.o
	return &http.Transport{
		DialContext:            (&net.Dialer{Timeout: o.Timeout}).DialContext,
		TLSHandshakeTimeout:    o.Timeout,
		MaxConnsPerHost:        o.MaxConns,
		MaxIdleConns:           o.MaxConns,
		MaxIdleConnsPerHost:    o.MaxConns,
		IdleConnTimeout:        30 * time.Second,
		ResponseHeaderTimeout:  o.Timeout,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

// closeWays closes the idle connections of every transport.
func (m *Mirror) closeWays() {
	w := &m.ways
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.clients {
		c.Transport.(*http.Transport).CloseIdleConnections()
	}
}
