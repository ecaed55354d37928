package config

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// lookupTimeout bounds the name lookups of the self-reference check.
const lookupTimeout = 2 * time.Second

// selfReferences fails every instance address that is one of vipswap's own
// listeners or its admin address, however it is spelled: localhost:8080 for
// a prod on 127.0.0.1:8080, the machine's own address for a listener on
// every interface. A request sent there would come back to vipswap and be
// forwarded again, without end. Names are resolved (a name that does not
// resolve is let through: it cannot be vipswap); listeners on port 0 get
// their port when they start and cannot collide with a configured one.
func (v *validator) selfReferences() {
	type own struct {
		key  string
		ips  []netip.Addr // nil: every local address
		port int
	}
	var owns []own
	for _, l := range []struct{ key, addr string }{
		{"listeners.prod", v.c.Listeners.Prod},
		{"listeners.stage", v.c.Listeners.Stage},
		{"admin.listen", v.c.Admin.Listen},
	} {
		host, port, ok := splitPort(l.addr)
		if !ok || port == 0 {
			continue
		}
		o := own{key: l.key, port: port}
		if ip, err := netip.ParseAddr(host); host != "" && (err != nil || !ip.IsUnspecified()) {
			o.ips = lookupAddrs(host)
		}
		owns = append(owns, o)
	}
	if len(owns) == 0 {
		return
	}
	var local []netip.Addr // the machine's addresses, looked up once
	for _, name := range v.c.SlotOrder {
		for i, a := range v.c.Slots[name].Instances {
			host, port, ok := splitPort(a)
			if !ok {
				continue
			}
			ips := lookupAddrs(host)
			for _, o := range owns {
				if o.port != port {
					continue
				}
				match := o.ips
				if match == nil {
					if local == nil {
						local = localAddrs()
					}
					match = local
				}
				if shares(ips, match) {
					v.fail(fmt.Sprintf("slots.%s.instances[%d]", name, i),
						fmt.Sprintf("%s is vipswap's own %s (%s): requests sent there would come back to vipswap", a, o.key, v.addrOf(o.key)))
					break
				}
			}
		}
	}
}

func (v *validator) addrOf(key string) string {
	switch key {
	case "listeners.prod":
		return v.c.Listeners.Prod
	case "listeners.stage":
		return v.c.Listeners.Stage
	}
	return v.c.Admin.Listen
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
