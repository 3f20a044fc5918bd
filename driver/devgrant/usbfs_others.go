//go:build !linux

package devgrant

import "github.com/drvkit/drvkit/driver/usb"

func grantUsbfs(*usb.Journal, int, int, int) (File, func() error, error) {
	return File{}, nil, ErrNotSupported
}

func openUsbfsDevice(f Received) (usb.Device, error) {
	return nil, &usb.OpError{Op: "open " + f.Node, Err: ErrNotSupported}
}
