package hotplugtest_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/hotplugtest"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// A machine with one USB stick, as a coldplug walk finds it.
func ExampleBuildSysfs() {
	const stick = "/sys/devices/pci0000:00/0000:00:02.0/usb2/2-1"
	dump := `
# a USB stick at port 2-1
SYSDIR /sys/bus/usb/devices/2-1 -> ` + stick + `
SYSATTR ` + stick + `/serial=4C530001
SYSLINK ` + stick + `/driver -> /sys/bus/usb/drivers/usb
SYSUEVENT ` + stick + ` DEVTYPE=usb_device
SYSUEVENT ` + stick + ` DRIVER=usb
SYSUEVENT ` + stick + ` PRODUCT=781/5567/100
SYSUEVENT ` + stick + ` TYPE=0/0/0
SYSUEVENT ` + stick + ` BUSNUM=002
SYSUEVENT ` + stick + ` DEVNUM=002
SYSUEVENT ` + stick + ` DEVNAME=bus/usb/002/002
`
	dir, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(dir)
	if err := hotplugtest.BuildSysfs(dir, strings.NewReader(dump)); err != nil {
		fmt.Println(err)
		return
	}
	evs, err := hotplug.Walk(dir, []hotplug.Class{usbbus.Devices}, hotplug.OriginColdplug)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ev := range evs {
		d, _ := ev.USBDevice()
		_ = d.ReadAttrs(dir, ev.DevPath)
		fmt.Printf("%s %s %04x:%04x serial %s, driver %s\n", ev.Action, d.Port, d.Vendor, d.Product, d.Serial, ev.Get("DRIVER"))
	}

	err = hotplugtest.BuildSysfs(dir, strings.NewReader("SYSATTR /sys/../etc/passwd=x\n"))
	fmt.Println(err)
	// Output:
	// add 2-1 0781:5567 serial 4C530001, driver usb
	// sysfs dump line 1: path "/sys/../etc/passwd" escapes /sys: "SYSATTR /sys/../etc/passwd=x"
}
