// Package wire is the protocol between the drvkit daemon and the process
// of an out-of-process driver (a driver bundle's executable): one JSON
// object per SOCK_SEQPACKET message over a socketpair, descriptors
// attached with SCM_RIGHTS to the message that lists them. PROTOCOL.md at
// the root of the repository is its specification; this package is the Go
// encoding of it, used by the daemon's host (package driver/host) and the
// Go SDK of driver processes (package driver/driverproc). It imports
// nothing of drvkit, so a program speaking the protocol links nothing else.
//
// [Decode] checks a message completely — a known type, the fields that type
// needs, the descriptors it may carry — so that both sides act only on
// well-formed messages; [Conn] reads and writes them with their
// descriptors and refuses anything over [MaxMessage].
package wire
