package usbbus_test

import (
	"context"
	"fmt"
	"os"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// The adapter on its own, as the bridge uses it: the simulator produces
// the kernel's uevents for a USB stick and keeps a sysfs mirror; Match says
// which devices get nubs, Describe what each nub is.
func Example() {
	dir, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(dir)
	sc, _ := sim.ParseScenarioString("stick.scn",
		`plug usb 2-1 vid=0781 pid=5567 manufacturer=SanDisk product="Cruzer Blade" serial=4C53 ifaces=08/06/50`)
	src, err := sim.New(sc, sim.Config{SysfsDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()

	bus := usbbus.New()
	for {
		ev, err := src.Next(context.Background())
		if err != nil {
			break // io.EOF: the scenario is over
		}
		if ev.Subsystem != usbbus.Devices.Subsystem || ev.Action != hotplug.ActionAdd || !bus.Match(&ev).Nub {
			continue
		}
		nub, err := bus.Describe(&hotplug.DeviceInfo{Event: ev, SysfsRoot: dir, Final: true})
		if err != nil {
			fmt.Println(err)
			continue
		}
		p := nub.Properties
		switch nub.Class {
		case usbbus.ClassDevice:
			fmt.Printf("%s %s: %04x:%04x %q %q serial %s, %s\n", nub.Class, nub.Name,
				p[usbbus.PropVendorID], p[usbbus.PropProductID], p[usbbus.PropManufacturer], p[usbbus.PropProduct],
				p[usbbus.PropSerial], p[usbbus.PropDevNode])
		case usbbus.ClassInterface:
			fmt.Printf("%s %s: interface %d, class %02x/%02x/%02x\n", nub.Class, nub.Name, p[usbbus.PropIfaceNumber],
				p[usbbus.PropIfaceClass], p[usbbus.PropIfaceSub], p[usbbus.PropIfaceProto])
		}
	}
	// Output:
	// USBDevice 2-1: 0781:5567 "SanDisk" "Cruzer Blade" serial 4C53, /dev/bus/usb/002/002
	// USBInterface 2-1:1.0: interface 0, class 08/06/50
}
