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
