package config

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// lookupTimeout bounds the name lookups of the self-reference check.
const lookupTimeout = 2 * time.Second

// selfReferences fails every instance address that is one of vipswap's own
// listeners or its admin address (see Loops). Listeners on port 0 get their
// port when they start and cannot collide with a configured one.
func (v *validator) selfReferences() {
	own := map[string]string{
		"listeners.prod":  v.c.Listeners.Prod.Addr,
		"listeners.stage": v.c.Listeners.Stage.Addr,
		"admin.listen":    v.c.Admin.Listen,
	}
	for _, name := range v.c.SlotOrder {
		for i, a := range v.c.Slots[name].Instances {
			if key := Loops(a, own); key != "" {
				v.fail(fmt.Sprintf("slots.%s.instances[%d]", name, i),
					fmt.Sprintf("%s is vipswap's own %s (%s): requests sent there would come back to vipswap", a, key, own[key]))
			}
		}
	}
}

// Loops returns the key of the address in own (key to host:port) that addr
// reaches, however it is spelled: localhost:8080 for a prod on
// 127.0.0.1:8080, the machine's own address for a listener on every
// interface. It returns "" when addr reaches none of them. A request sent
// to such an instance would come back to vipswap and be forwarded again,
// without end. Names are resolved (a name that does not resolve is let
// through: it cannot be vipswap); addresses with port 0 are skipped.
func Loops(addr string, own map[string]string) string {
	host, port, ok := splitPort(addr)
	if !ok {
		return ""
	}
	var ips, local []netip.Addr // looked up once, when needed
	for _, key := range slices.Sorted(maps.Keys(own)) {
		ownHost, ownPort, ok := splitPort(own[key])
		if !ok || ownPort == 0 || ownPort != port {
			continue
		}
		if ips == nil {
			ips = lookupAddrs(host)
		}
		var match []netip.Addr
		if ip, err := netip.ParseAddr(ownHost); ownHost != "" && (err != nil || !ip.IsUnspecified()) {
			match = lookupAddrs(ownHost)
		} else {
			if local == nil {
				local = localAddrs()
			}
			match = local
		}
		if shares(ips, match) {
			return key
		}
	}
	return ""
}

func splitPort(addr string) (string, int, bool) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	port, err := strconv.Atoi(p)
	return host, port, err == nil
}

// lookupAddrs returns host's addresses: itself if it is one, else what the
// resolver says (nothing if it does not answer in time). An empty host is
// every local address.
func lookupAddrs(host string) []netip.Addr {
	if host == "" {
		return localAddrs()
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return localAddrs()
		}
		return []netip.Addr{ip.Unmap()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for i, ip := range ips {
		ips[i] = ip.Unmap()
	}
	return ips
}

// localAddrs returns the machine's own addresses, loopback included.
func localAddrs() []netip.Addr {
	out := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// shares reports whether a and b have an address in common.
func shares(a, b []netip.Addr) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}
