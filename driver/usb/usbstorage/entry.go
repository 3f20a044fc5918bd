package usbstorage

import (
	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/usb"
)

// BackendKey is the resource through which USB drivers open devices: the
// daemon provides libusb on real hardware, the simulator's fake on a
// simulated bus, wrapped in the detach journal with a state directory.
// Resources are identified by name, so another USB driver may declare the
// same key or use this one.
var BackendKey = drivertable.NewKey[usb.Backend]("usb")

// MatchKeys are the keys of a custom personality of a driver of
// USBInterface nubs: the properties the hotplug bridge publishes on them
// (sysfs attribute names).
var MatchKeys = []drivertable.MatchKey{
	drivertable.HexKey("vid", "idVendor", 16, "vendor id, hex as lsusb prints it"),
	drivertable.HexKey("pid", "idProduct", 16, "product id, hex"),
	drivertable.HexKey("class", PropInterfaceClass, 8, "interface class, hex"),
	drivertable.HexKey("subclass", PropInterfaceSubClass, 8, "interface subclass, hex"),
	drivertable.HexKey("protocol", PropInterfaceProtocol, 8, "interface protocol, hex"),
	drivertable.IntKey("iface", PropInterfaceNumber, 0, 255, "interface number"),
}

// Entry is usbstorage's entry in the driver table. Its default personality
// matches bulk-only mass-storage interfaces; a custom one (a product whose
// interface is vendor-specific but speaks bulk-only all the same) matches
// by MatchKeys.
var Entry = drivertable.Entry{
	Name:      Name,
	Summary:   "USB mass storage over bulk-only transport (detaches the kernel's usb-storage from the interfaces it claims)",
	Needs:     []string{BackendKey.Name()},
	MatchKeys: MatchKeys,
	Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
		b, err := BackendKey.From(r)
		if err != nil {
			return nil, err
		}
		return []driver.Personality{Personality(b)}, nil
	},
}
