//go:build !linux

package hid

// Hidraw is the Backend of the kernel's hidraw nodes; outside Linux, Open
// fails with ErrNotSupported.
type Hidraw struct{}

var _ Backend = Hidraw{}

// Open implements Backend.
func (Hidraw) Open(node string) (Device, error) {
	return nil, &OpError{Op: "open", Node: node, Err: ErrNotSupported}
}
