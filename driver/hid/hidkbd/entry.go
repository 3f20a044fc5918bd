package hidkbd

import (
	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
)

// BackendKey is the resource through which HID drivers open hidraw nodes:
// the kernel's on real hardware, the simulator's keyboards on a simulated
// bus.
var BackendKey = drivertable.NewKey[hid.Backend]("hidraw")

// MatchKeys are the keys of a custom personality of a driver of HIDDevice
// nubs (the properties hotplug/hidbus publishes).
var MatchKeys = []drivertable.MatchKey{
	drivertable.HexKey("vid", "idVendor", 16, "vendor id, hex"),
	drivertable.HexKey("pid", "idProduct", 16, "product id, hex"),
	drivertable.IntKey("bus", "hidBus", 0, 0xffff, "HID bus type (3 USB, 5 Bluetooth)"),
	drivertable.StringKey("name", "hidName", "the device's HID name"),
	drivertable.HexKey("usagepage", PropUsagePage, 16, "usage page of the first top-level collection, hex"),
	drivertable.HexKey("usage", PropUsage, 16, "usage of the first top-level collection, hex"),
}

// Entry is hidkbd's entry in the driver table. Every personality of it
// requires a hidraw node on the nub; the default one matches keyboards
// (Generic Desktop / Keyboard).
var Entry = drivertable.Entry{
	Name:      Name,
	Summary:   "HID keyboards through their hidraw node: key presses, typed text, LEDs",
	Needs:     []string{BackendKey.Name()},
	MatchKeys: MatchKeys,
	Require:   []driver.Match{driver.MatchFunc(hasNode)},
	Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
		b, err := BackendKey.From(r)
		if err != nil {
			return nil, err
		}
		p := Personality(b)
		p.Match = []driver.Match{
			driver.MatchValue(PropUsagePage, hid.UsagePageGenericDesktop),
			driver.MatchValue(PropUsage, hid.UsageKeyboard),
		}
		return []driver.Personality{p}, nil
	},
}

func hasNode(p driver.Properties) bool { n, ok := p.String(PropHidraw); return ok && n != "" }
