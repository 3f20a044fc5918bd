package buses_test

import (
	"fmt"

	"github.com/drvkit/drvkit/hotplug/buses"
)

// The adapters drvkit ships, and the sysfs classes a coldplug walk, the
// netlink source's resync and the simulator's mirror list for them.
func ExampleDefault() {
	for _, b := range buses.Default() {
		fmt.Print(b.Name(), ":")
		for _, c := range b.Classes() {
			fmt.Printf(" %s (%s)", c.Dir, c.Subsystem)
		}
		fmt.Println()
	}
	fmt.Println(len(buses.Classes()), "classes")
	// Output:
	// usb: bus/usb/devices (usb)
	// scsi: bus/scsi/devices (scsi) class/scsi_generic (scsi_generic)
	// hid: bus/hid/devices (hid) class/hidraw (hidraw)
	// 5 classes
}
