//go:build !linux

package readable

import "syscall"

// Socket is unavailable off Linux: Watch always fails.
type Socket struct{}

// Watch reports ErrNotSupported.
func Watch(rc syscall.RawConn) (*Socket, error) {
	return nil, &OpError{Op: "watch", Err: ErrNotSupported}
}

// Wait reports false.
func (*Socket) Wait() bool { return false }

// Again does nothing.
func (*Socket) Again() {}

// Remove does nothing.
func (*Socket) Remove() {}
