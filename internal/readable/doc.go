// Package readable tells a socket's reader when the socket has become
// readable, so that the reader never makes a read only to learn that
// nothing is there.
//
// A goroutine reading a socket through package net reads until a read
// fails with EAGAIN and only then waits: each message it receives costs a
// second, empty read(2). A client receiving a notification at a time pays
// that for every one, and on a virtual machine a system call's entry and
// exit can cost more than the message's whole handling. Watched sockets are
// registered, edge-triggered, on one epoll instance per process, which
// the runtime's own poller watches; one goroutine collects their edges, a
// batch per epoll_wait. A reader whose last read came back short waits for
// its socket's next edge (Wait) instead of reading again.
//
// The epoll instance and its goroutine exist while a socket is watched:
// Remove of the last one ends both before it returns, so that a leak check
// after every connection is closed finds nothing. Off Linux, Watch returns
// an error matching ErrNotSupported and the caller reads the usual way.
package readable
