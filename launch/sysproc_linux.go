package launch

import "syscall"

// sysProcAttr puts each instance in its own process group, so a Ctrl-C in
// vipswap's terminal reaches vipswap alone and vipswap decides the stop
// order, and asks Linux to SIGTERM the instance if vipswap dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
