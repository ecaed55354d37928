// Package rawsock reads and writes a non-blocking socket with system calls
// the Go runtime does not account as blocking ones.
//
// A net.Conn's Read and Write enter each system call as one that may block
// (entersyscall, exitsyscall): when a call outlasts a tick of the runtime's
// monitor thread (20 µs, which a write on a loopback socket often does: the
// kernel delivers the bytes within it), the monitor hands the processor to
// another thread, waking it, and keeps waking every 20 µs while that goes
// on. On a socket in non-blocking mode no call blocks: a read with nothing
// to read, or a write with no room, returns EAGAIN at once, and IO waits in
// Go's poller as net.Conn does. So IO makes the calls raw.
//
// It is Linux's: elsewhere Supported is false, and callers read and write
// through net.Conn.
package rawsock
