package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// processStart is when the process started, near enough: package
// initialisation runs before main, a few milliseconds after exec.
var processStart = time.Now()

// Socket activation: systemd (or anything speaking its protocol) may hand
// vipswap its listening sockets: LISTEN_FDS descriptors from 3 on, meant
// for the process LISTEN_PID, named in LISTEN_FDNAMES (FileDescriptorName=
// in the .socket unit). The sockets outlive vipswap: while it is down,
// connections wait in their backlog instead of being refused.

// listenerNames are the FileDescriptorName= values that name vipswap's
// listeners, by the configuration key they stand for.
var listenerNames = map[string]string{"listeners.prod": "prod", "listeners.stage": "stage", "admin.listen": "admin"}

// inherited are the listening sockets handed to this process, matched to
// the configuration's listeners.
type inherited struct {
	once  sync.Once
	err   error
	byKey map[string]net.Listener // by configuration key (listeners.prod, ...)
}

// activated is this process's: it reads LISTEN_* once, the first time a
// listener is bound, and unsets them so that run: instances do not see them.
var activated inherited

// listenTCP returns the listening socket for the configuration key name
// (listeners.prod, listeners.stage or admin.listen) at addr: the one
// inherited from systemd if any was, else a new one.
func (n *node) listenTCP(name, addr string) (net.Listener, error) {
	activated.once.Do(func() {
		if activated.err = checkListenFDs(os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")); activated.err != nil {
			os.Unsetenv("LISTEN_PID")
			os.Unsetenv("LISTEN_FDS")
			os.Unsetenv("LISTEN_FDNAMES")
			return
		}
		activated.byKey, activated.err = matchInherited(inheritedListeners(activation.Files(true)), map[string]string{
			"listeners.prod":  n.initial.Listeners.Prod.Addr,
			"listeners.stage": n.initial.Listeners.Stage.Addr,
			"admin.listen":    n.initial.Admin.Listen,
		})
		if activated.err == nil && len(activated.byKey) > 0 {
			n.log.Info("listening sockets inherited from systemd", "listeners", len(activated.byKey))
		}
	})
	if activated.err != nil {
		return nil, fmt.Errorf("the sockets systemd handed over: %w", activated.err)
	}
	if ln := activated.byKey[name]; ln != nil {
		delete(activated.byKey, name) // a second bind (a test's second node) binds anew
		return ln, nil
	}
	if name == "admin.listen" {
		return net.Listen("tcp", addr)
	}
	return listenClients(addr)
}

// listenClients returns a listening socket for prod's or stage's clients
// at addr. Their connections get no TCP keep-alive probes, as HAProxy's
// and nginx's do not: an idle one closes at its idle timeout, a request is
// bounded by its own timeouts, and Go's default probes cost four system
// calls per connection. A tunnel (WebSocket), which may stay quiet for
// hours, turns them on when it begins.
func listenClients(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}

// maxInherited is how many sockets vipswap may be handed: one per
// listener (prod, stage, admin).
const maxInherited = 3

// checkListenFDs refuses a LISTEN_FDS meant for this process (LISTEN_PID)
// that is no count of sockets vipswap could use, before anything takes
// descriptors on its word.
func checkListenFDs(pid, fds string) error {
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil // not for this process: ignored
	}
	n, err := strconv.Atoi(fds)
	switch {
	case err != nil || n < 0:
		return fmt.Errorf("LISTEN_FDS=%.20q is no count of sockets", fds)
	case n > maxInherited:
		return fmt.Errorf("LISTEN_FDS=%d: vipswap has %d listeners (prod, stage, admin), so takes %d sockets at most", n, maxInherited, maxInherited)
	}
	return nil
}

// namedListener is an inherited socket and the name systemd gave it.
type namedListener struct {
	name string
	ln   net.Listener
	err  error // not a listening TCP socket
}

// inheritedListeners turns the inherited descriptors into listeners, and
// closes the files (the listeners hold copies).
func inheritedListeners(files []*os.File) []namedListener {
	var out []namedListener
	for _, f := range files {
		ln, err := net.FileListener(f)
		if err == nil {
			if _, ok := ln.Addr().(*net.TCPAddr); !ok {
				ln.Close()
				ln, err = nil, fmt.Errorf("it is a %s socket, not TCP", ln.Addr().Network())
			}
		}
		out = append(out, namedListener{name: f.Name(), ln: ln, err: err})
		f.Close()
	}
	return out
}

// matchInherited matches the inherited sockets to the configured
// listeners (addrs, by configuration key): by name (prod, stage, admin),
// else by address. A socket that matches no listener, a named one bound
// elsewhere than its listener's address, or two for one listener is an
// error, and then every inherited socket is closed.
func matchInherited(sockets []namedListener, addrs map[string]string) (map[string]net.Listener, error) {
	byKey := map[string]net.Listener{}
	err := func() error {
		for _, s := range sockets {
			if s.err != nil {
				return fmt.Errorf("inherited socket %q: %v", s.name, s.err)
			}
		}
		for _, s := range sockets {
			got := s.ln.Addr().(*net.TCPAddr)
			key := ""
			for _, k := range slices.Sorted(maps.Keys(listenerNames)) {
				if listenerNames[k] == s.name {
					key = k
				}
			}
			if key != "" && !sameAddr(addrs[key], got) {
				return fmt.Errorf("%s is %s but the inherited socket %q is bound to %s: make them the same", key, addrs[key], s.name, got)
			}
			if key == "" {
				for _, k := range slices.Sorted(maps.Keys(addrs)) {
					if sameAddr(addrs[k], got) {
						key = k
						break
					}
				}
			}
			if key == "" {
				return fmt.Errorf("inherited socket %q on %s matches no listener (prod %s, stage %s, admin %s): name it prod, stage or admin (FileDescriptorName=) or make the addresses the same",
					s.name, got, addrs["listeners.prod"], addrs["listeners.stage"], addrs["admin.listen"])
			}
			if byKey[key] != nil {
				return fmt.Errorf("two inherited sockets for %s (%s and %s)", key, byKey[key].Addr(), got)
			}
			byKey[key] = s.ln
		}
		return nil
	}()
	if err != nil {
		for _, s := range sockets {
			if s.ln != nil {
				s.ln.Close()
			}
		}
		return nil, err
	}
	return byKey, nil
}

// sameAddr reports whether the configured host:port addr names the bound
// address got: the same port, and the same IP, or both a wildcard
// (an empty host, 0.0.0.0 or ::). A host name stands for its addresses.
func sameAddr(addr string, got *net.TCPAddr) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != fmt.Sprint(got.Port) {
		return false
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		return got.IP.IsUnspecified()
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.Equal(got.IP)
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(ips, got.IP.Equal)
}

// startToReady is the time from the process's start to serving, once it
// serves (vipswap_start_to_ready_seconds).
var startToReady atomic.Int64

// serving records that the node serves: the time from the process's start
// (for vipswap_start_to_ready_seconds and the log), and tells systemd
// (READY=1, for Type=notify) when it started vipswap with NOTIFY_SOCKET.
func (n *node) serving() {
	d := time.Since(processStart)
	startToReady.Store(int64(d))
	n.log.Info("serving", "start_to_ready", d.Round(time.Millisecond).String())
	if err := sdNotify(notifySocket, "READY=1"); err != nil {
		n.log.Warn("could not tell systemd that vipswap is ready", "err", err)
	}
}

// notifySocket is where systemd listens for the service's notifications
// (NOTIFY_SOCKET), read and unset at start so that run: instances do not
// speak for vipswap.
var notifySocket = func() string {
	s := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	return s
}()

// sdNotify sends state to systemd's notification socket, as sd_notify(3)
// does; without a socket it does nothing. A name starting with @ is in
// the abstract namespace (the net package maps it).
func sdNotify(socket, state string) error {
	if socket == "" {
		return nil
	}
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return errors.New("NOTIFY_SOCKET " + socket + " is no unix socket path")
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
