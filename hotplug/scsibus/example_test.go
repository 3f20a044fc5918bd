package scsibus_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/scsibus"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// A LUN and its sg node, as the bridge sees them. The sg node is a
// companion: Match names the LUN it completes, and until the node is known
// (from its add, or because sysfs already lists it) the LUN is incomplete.
func Example() {
	dir, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(dir)
	sc, _ := sim.ParseScenarioString("stick.scn", `plug usb 2-1 vid=0781 pid=5567 serial=4C53 ifaces=08/06/50`)
	src, err := sim.New(sc, sim.Config{SysfsDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()

	bus := scsibus.New()
	var lun, sg *hotplug.Event
	for {
		ev, err := src.Next(context.Background())
		if err != nil {
			break // io.EOF: the scenario is over
		}
		if ev.Action != hotplug.ActionAdd || (ev.Subsystem != scsibus.Devices.Subsystem && ev.Subsystem != scsibus.Generic.Subsystem) {
			continue
		}
		switch role := bus.Match(&ev); {
		case role.Nub:
			lun = &ev
		case role.Owner != "":
			sg = &ev
			fmt.Printf("%s completes the LUN at %s\n", ev.Name(), role.Owner)
		}
	}
	if lun == nil || sg == nil {
		fmt.Println("no LUN or no sg node")
		return
	}

	// Before the node's add, in a sysfs that does not list it yet.
	empty, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(empty)
	_, err = bus.Describe(&hotplug.DeviceInfo{Event: *lun, SysfsRoot: empty})
	fmt.Println(err, errors.Is(err, hotplug.ErrIncomplete))

	// With the node's add: the nub.
	nub, err := bus.Describe(&hotplug.DeviceInfo{Event: *lun, Companions: []hotplug.Event{*sg}, SysfsRoot: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	p := nub.Properties
	fmt.Printf("%s %s: type %d, %q %q, hctl %s, %s\n", nub.Class, nub.Name,
		p[scsibus.PropType], p[scsibus.PropVendor], p[scsibus.PropModel], p[scsibus.PropHCTL], p[scsibus.PropSG])
	// Output:
	// sg0 completes the LUN at /devices/pci0000:00/0000:00:02.0/usb2/2-1/2-1:1.0/host1/target1:0:0/1:0:0:0
	// device waits for a companion true
	// SCSIDevice 1:0:0:0: type 0, "QEMU" "QEMU HARDDISK", hctl 1:0:0:0, /dev/sg0
}
