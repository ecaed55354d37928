package proxy

// Budget is how vipswap shares its file descriptors, so that clients can
// never take the ones probes, instances and the admin API need.
type Budget struct {
	// Descriptors is the process's limit (RLIMIT_NOFILE; Go raises the
	// soft limit to the hard one at start).
	Descriptors int
	// Reserve is kept for everything but client connections and the
	// connections that serve them: probes, the admin API, the state file,
	// logs, managed instances' pipes.
	Reserve int
	// MaxConns is the default connection limit of each listener.
	MaxConns int
	// MaxIdleConns is the default bound on idle connections to instances.
	MaxIdleConns int
}

// BudgetFor shares n descriptors: a reserve of a quarter (at most 1024),
// then a fifth of the rest for each listener's clients, a fifth each for
// the instance connections serving them, and a fifth for idle instance
// connections. Each listener is capped at 100,000 connections.
func BudgetFor(n int) Budget {
	reserve := min(n/4, 1024)
	share := max((n-reserve)/5, 1)
	return Budget{
		Descriptors:  n,
		Reserve:      reserve,
		MaxConns:     min(share, 100000),
		MaxIdleConns: min(share, 100000),
	}
}
