//go:build !linux

package launch

import "syscall"

// sysProcAttr puts each instance in its own process group, so a Ctrl-C in
// vipswap's terminal reaches vipswap alone.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
