//go:build !linux

package uring

// Ring is unavailable off Linux: New always fails.
type Ring struct{}

// New reports ErrNotSupported.
func New(entries int) (*Ring, error) {
	return nil, &OpError{Op: "setup", Err: ErrNotSupported}
}

// Send reports false.
func (*Ring) Send(fd int, b []byte, user uint64) bool { return false }

// Flush does nothing.
func (*Ring) Flush(done func(user uint64, n int, err error)) error { return nil }

// Close does nothing.
func (*Ring) Close() error { return nil }

// Err reports ErrNotSupported.
func (*Ring) Err() error { return ErrNotSupported }

// Break does nothing.
func (*Ring) Break(error) {}
