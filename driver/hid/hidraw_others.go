//go:build !linux

package hid

import "os"

// Hidraw is the Backend of the kernel's hidraw nodes; outside Linux, Open
// fails with ErrNotSupported.
type Hidraw struct{}

var _ Backend = Hidraw{}

// Open implements Backend.
func (Hidraw) Open(node string) (Device, error) {
	return nil, &OpError{Op: "open", Node: node, Err: ErrNotSupported}
}

// FromFile fails with ErrNotSupported outside Linux.
func FromFile(f *os.File, node string) (Device, error) {
	return nil, &OpError{Op: "open", Node: node, Err: ErrNotSupported}
}
