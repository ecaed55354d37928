package node

import "os"

// upgradeSignals make the node upgrade itself: Windows has no SIGUSR2, so
// only vipswap upgrade does.
var upgradeSignals []os.Signal
