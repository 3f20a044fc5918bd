// Command usbstorage is the executable of the usbstorage driver bundle: the
// built-in USB mass-storage driver (driver/usb/usbstorage), unchanged, in a
// process of its own. The daemon claims the stick's interface (behind the
// USB hold: authorizes it first) and grants it the usbfs device
// (driver/devgrant) and nothing else; the bus and device numbers it opens
// the device by come with the start message's providers (PROTOCOL.md 1.2).
package main

import (
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
)

func main() { driverproc.Main(usbstorage.Entry) }
