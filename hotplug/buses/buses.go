// Package buses is the set of bus adapters drvkit ships, for callers that
// want them all:
//
//	b := hotplug.NewBridge(reg, hotplug.BridgeConfig{Buses: buses.Default()})
//	src, err := hotplug.NewNetlink(hotplug.NetlinkConfig{Classes: hotplug.ClassesOf(buses.Default()...)})
//
// Adding a bus to drvkit is one line here; a program that wants fewer (or
// its own) passes its own list instead.
package buses

import (
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/hotplug/scsibus"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// Default returns a new list of the adapters of every bus drvkit knows:
// USB, SCSI and HID.
func Default() []hotplug.Bus {
	return []hotplug.Bus{
		usbbus.New(),
		scsibus.New(),
		hidbus.New(),
	}
}

// Classes returns the sysfs classes of the Default buses.
func Classes() []hotplug.Class { return hotplug.ClassesOf(Default()...) }
