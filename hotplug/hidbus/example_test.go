package hidbus_test

import (
	"context"
	"fmt"
	"os"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// A USB keyboard's HID device and its hidraw node, as the bridge sees
// them: Match gives the device a nub and names the device the node
// completes; Describe reads the identity from the uevent and the report
// descriptor from sysfs.
func Example() {
	dir, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(dir)
	sc, _ := sim.ParseScenarioString("kbd.scn",
		`plug usb 1-1 vid=046d pid=c31c manufacturer=Logitech product="USB Keyboard" serial=K1 ifaces=03/01/01 hid=keyboard`)
	src, err := sim.New(sc, sim.Config{SysfsDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()

	bus := hidbus.New()
	var dev *hotplug.DeviceInfo
	for {
		ev, err := src.Next(context.Background())
		if err != nil {
			break // io.EOF: the scenario is over
		}
		if ev.Action != hotplug.ActionAdd || (ev.Subsystem != hidbus.Devices.Subsystem && ev.Subsystem != hidbus.Raw.Subsystem) {
			continue
		}
		switch role := bus.Match(&ev); {
		case role.Nub:
			dev = &hotplug.DeviceInfo{Event: ev, SysfsRoot: dir}
		case dev != nil && role.Owner == dev.Event.DevPath:
			fmt.Println(ev.Name(), "completes", dev.Event.Name())
			dev.Companions = append(dev.Companions, ev)
		}
	}
	if dev == nil {
		fmt.Println("no HID device")
		return
	}
	nub, err := bus.Describe(dev)
	if err != nil {
		fmt.Println(err)
		return
	}
	p := nub.Properties
	fmt.Printf("%s %s: bus %d, %04x:%04x %q, uniq %s\n", nub.Class, nub.Name,
		p[hidbus.PropBus], p[hidbus.PropVendorID], p[hidbus.PropProductID], p[hidbus.PropName], p[hidbus.PropUniq])
	fmt.Printf("usage %d/%d, %d-byte report descriptor, node %s\n",
		p[hidbus.PropUsagePage], p[hidbus.PropUsage], p[hidbus.PropDescriptorSize], p[hidbus.PropHidraw])
	// Output:
	// hidraw0 completes 0003:046D:C31C.0001
	// HIDDevice 0003:046D:C31C.0001: bus 3, 046d:c31c "Logitech USB Keyboard", uniq K1
	// usage 1/6, 63-byte report descriptor, node /dev/hidraw0
}

// ParseID reads HID_ID as the kernel prints it.
func ExampleParseID() {
	id, err := hidbus.ParseID("0003:0000046D:0000C31C")
	fmt.Println(id.Bus, id, err)
	_, err = hidbus.ParseID("0003:046D")
	fmt.Println(err)
	// Output:
	// 3 0003:0000046D:0000C31C <nil>
	// malformed uevent (HID_ID): "0003:046D" is not BBBB:VVVVVVVV:PPPPPPPP
}
