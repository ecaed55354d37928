//go:build !windows

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// checkBinaryOwner refuses a binary to upgrade to that someone other
// than root or the user vipswap runs as could have written, or could
// replace before it is started: the file must be owned by one of them,
// and so must its directory, which no one else may write to (unless it is
// sticky, as /tmp is: then no one else may replace a file in it).
func checkBinaryOwner(path string, fi os.FileInfo) error {
	trusted := func(fi os.FileInfo) bool {
		st, ok := fi.Sys().(*syscall.Stat_t)
		return ok && (st.Uid == 0 || int(st.Uid) == os.Geteuid())
	}
	if !trusted(fi) {
		return fmt.Errorf("binary: %s belongs to another user than root or the one vipswap runs as: refused", path)
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("binary: %v", err)
	}
	if di.Mode()&os.ModeSticky == 0 && (!trusted(di) || di.Mode().Perm()&0o022 != 0) {
		return fmt.Errorf("binary: its directory %s can be written by another user than root or the one vipswap runs as, who could replace it: refused", dir)
	}
	return nil
}
