//go:build unix

package proxy

import "syscall"

// DescriptorLimit returns the process's descriptor limit, or 0 if unknown.
func DescriptorLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return int(min(rl.Cur, 1<<30))
}
