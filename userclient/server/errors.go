package server

import (
	"errors"

	"github.com/drvkit/drvkit/userclient/wire"
)

// Errors that end a connection, as reported to Config.OnDisconnect, and
// errors of Listen.
var (
	// ErrPeerExited: the process that connected exited (seen on its pidfd),
	// even if another process still holds the socket.
	ErrPeerExited = errors.New("peer process exited")
	// ErrHandshakeTimeout: no hello within Config.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("no hello before the handshake timeout")
	// ErrFrameTimeout: a frame's rest did not arrive within
	// Limits.FrameTimeout of its first byte (it also matches
	// wire.ErrLimit, as the peer is told).
	ErrFrameTimeout = errors.New("frame not completed before the frame timeout")
	// ErrIdleTimeout: a connection holding nothing sent nothing for
	// Limits.IdleTimeout.
	ErrIdleTimeout = errors.New("connection idle")
	// ErrClientDied is why an embedded client's connection ended when its
	// context was cancelled (Server.Embed). It matches userclient.ErrClosed.
	ErrClientDied = &clientDied{}
	// ErrAddrInUse: another server answers on the socket path.
	ErrAddrInUse = errors.New("socket path in use by a live server")
	// ErrNotSocket: the socket path exists and is not a socket; it is never
	// removed.
	ErrNotSocket = errors.New("path exists and is not a socket")
)

type clientDied struct{}

func (*clientDied) Error() string        { return "embedded client's context was cancelled" }
func (*clientDied) Is(target error) bool { return target == wire.ErrClosed }

// OpError says which server operation failed, on what path, and why:
// "listen /run/drvkit.sock: socket path in use by a live server".
type OpError struct {
	Op   string // listen, embed
	Path string // the socket path, if any
	Err  error
}

func (e *OpError) Error() string {
	s := e.Op
	if e.Path != "" {
		s += " " + e.Path
	}
	return s + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }
