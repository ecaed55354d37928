//go:build !linux

package h1

import (
	"errors"
	"net"
)

// parker is Linux-only; elsewhere idle connections keep their goroutine.
type parker struct{}

func newParker(*Server) *parker   { return nil }
func (p *parker) park(*conn) bool { return false }
func (p *parker) stop()           {}
func (p *parker) start()          {}
func (p *parker) unwatch(*conn)   {}
func (p *parker) reclaim() bool   { return false }

func socket(net.Conn) int { return -1 }

// unread is Linux's; elsewhere a connection's next request is not looked
// for before its goroutine reads it.
func unread(int) bool { return false }

// awaitBytes is Linux's; elsewhere a TLS handshake runs under the idle
// deadline.
func awaitBytes(net.Conn) error { return errors.ErrUnsupported }
