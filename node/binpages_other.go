//go:build !linux

package node

// releaseBinaryPages is Linux's (see binpages_linux.go); elsewhere the
// binary's pages stay as the system mapped them.
func releaseBinaryPages() error { return nil }
