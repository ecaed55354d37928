//go:build !windows

package node

import (
	"os"
	"syscall"
)

// upgradeSignals make the node upgrade itself, as vipswap upgrade does.
var upgradeSignals = []os.Signal{syscall.SIGUSR2}
