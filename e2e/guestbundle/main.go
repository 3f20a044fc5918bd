// Command e2e-usbstorage is the executable of the driver bundle the
// USB-hold scenario of the end-to-end tests loads in the QEMU guest:
// drvkit's own usbstorage driver, unchanged, running in a process of its
// own (driver/driverproc). It opens its device by the bus and device
// numbers of the USB device above its interface nub — which reach it with
// the start message's providers (protocol 1.2) — and that device is the
// usbfs node the daemon granted it after claiming the interface. Its
// client methods (inquiry, capacity, read, write) are usbstorage's.
package main

import (
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
)

func main() { driverproc.Main(usbstorage.Entry) }
