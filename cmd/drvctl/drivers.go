package main

import (
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
)

// builtinDrivers is the driver table of `drvctl serve`: one entry per
// driver compiled in. A new driver adds its entry here and, if it needs a
// resource the daemon does not wire yet, a provider in (*daemon).resources.
func builtinDrivers() *drivertable.Table {
	t, err := drivertable.New(
		usbstorage.Entry,
		sg.Entry,
		hidkbd.Entry,
	)
	if err != nil {
		panic("drvctl: built-in driver table: " + err.Error()) // a programming error, caught by every test
	}
	return t
}
