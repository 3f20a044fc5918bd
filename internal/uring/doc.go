// Package uring sends on many sockets with one system call: a minimal
// io_uring (Linux 5.19 and later) holding non-blocking sends.
//
// A fan-out to a thousand clients is a thousand write(2)s; each costs its
// kernel entry and exit, which on a virtual machine can be most of a
// small write. Queued on a Ring, the same sends are submitted, run and
// completed inside one io_uring_enter.
//
// Only what drvkit needs is here: SEND with MSG_DONTWAIT, so that a full
// socket completes at once with EAGAIN instead of waiting in the kernel,
// and a Flush that returns only when every queued send has completed, so
// that the caller may reuse its buffers. Where io_uring is missing or
// forbidden (an older kernel, kernel.io_uring_disabled, a seccomp filter
// such as a container runtime's default), New returns an error matching
// ErrNotSupported and the caller writes the usual way.
package uring
