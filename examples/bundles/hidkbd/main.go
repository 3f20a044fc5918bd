// Command hidkbd is the executable of the hidkbd driver bundle: the
// built-in HID keyboard driver (driver/hid/hidkbd), unchanged, in a process
// of its own. The daemon grants it the keyboard's hidraw node
// (driver/devgrant) and nothing else.
package main

import (
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
)

func main() { driverproc.Main(hidkbd.Entry) }
