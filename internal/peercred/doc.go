// Package peercred tells who is at the other end of a local connection:
// SO_PEERCRED for a Unix socket, and for a TCP connection over loopback
// the owner of the peer's socket as the kernel lists it in /proc/net/tcp
// and /proc/net/tcp6 (both ends are on this host, so the kernel knows).
// The daemon's HTTP listener uses it to apply the socket's read policy to
// the metrics endpoint and the registry explorer.
package peercred

import "errors"

// ErrNotSupported: the platform cannot tell who the peer is.
var ErrNotSupported = errors.New("peer credentials not supported on this platform")

// ErrNotFound: no socket of this host is the peer (a remote peer, or one
// that closed before it was looked up).
var ErrNotFound = errors.New("peer socket not found")

// Cred is the peer's identity. For a TCP peer the kernel says only the
// socket's owner: PID is 0 and GID is NoGID.
type Cred struct {
	UID, GID uint32
	PID      int32
}

// NoGID is a Cred's GID when the kernel does not say ((gid_t)-1 is
// nobody's group).
const NoGID = ^uint32(0)
