//go:build !(linux && cgo)

package usb

import "context"

// Gousb is the libusb backend; this build (not Linux, or cgo disabled) has
// none, and every method fails with ErrNotSupported.
type Gousb struct{}

var _ Backend = (*Gousb)(nil)

// NewGousb returns a backend that reports ErrNotSupported.
func NewGousb() *Gousb { return &Gousb{} }

func unsupported(op string) error {
	return &OpError{Op: op, Err: ErrNotSupported}
}

// Devices fails with ErrNotSupported.
func (*Gousb) Devices(context.Context) ([]DeviceInfo, error) { return nil, unsupported("enumerate") }

// Open fails with ErrNotSupported.
func (*Gousb) Open(_ context.Context, sel Selector) (Device, error) {
	return nil, unsupported("open " + sel.String())
}

// ReattachAll does nothing.
func (*Gousb) ReattachAll() error { return nil }

// Close does nothing.
func (*Gousb) Close() error { return nil }

// BindKernelDriver fails with ErrNotSupported.
func (*Gousb) BindKernelDriver(_ context.Context, sel Selector, _ int, driver string) error {
	return unsupported("bind " + driver + " to " + sel.String())
}
