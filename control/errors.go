package control

// Kind says why the controller refused a call, so that the admin API can
// answer it with the right status without the controller knowing HTTP.
type Kind int

// The kinds of caller errors. Any other error is the controller's own
// failure (the store could not be written, for example).
const (
	// Invalid: the request itself is wrong (a missing field, a weight out
	// of range, a plan that does not parse).
	Invalid Kind = iota + 1
	// NotFound: it names a slot, instance or history entry that does not
	// exist.
	NotFound
	// Conflict: the state says no (a check refused the change, a stale
	// if_revision, another writer got there first). Revision is the state's
	// current revision, to retry against.
	Conflict
	// Unavailable: the state store cannot be reached; nothing changed.
	Unavailable
)

// Error is an error the caller can fix: Kind says which.
type Error struct {
	// Kind classifies it.
	Kind Kind
	// Err is the underlying error; its message is shown to the caller.
	Err error
	// Revision, when not zero, is the state's current revision.
	Revision uint64
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// invalid, notFound and conflict build the three kinds.
func invalid(err error) *Error  { return &Error{Kind: Invalid, Err: err} }
func notFound(err error) *Error { return &Error{Kind: NotFound, Err: err} }
func conflict(err error, rev uint64) *Error {
	return &Error{Kind: Conflict, Err: err, Revision: rev}
}
