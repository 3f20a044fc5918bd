package hotplug

import (
	"errors"
	"fmt"
)

// Bus is what the bridge, coldplug, resync and the simulator's sysfs mirror
// know about one kind of device: which uevents are its devices, what nub a
// device becomes (class, name, properties, provider), and where sysfs lists
// its devices. USB, SCSI and HID are three implementations (packages
// hotplug/usbbus, hotplug/scsibus, hotplug/hidbus); hotplug/buses.Default
// returns them. The bridge has no knowledge of any bus but through this
// interface.
//
// A device that needs a second device before it can be described — a SCSI
// LUN waits for its sg node, a HID device for its hidraw node — names it a
// companion: Match of the companion's event returns the owner's DEVPATH,
// and Describe of the owner sees the companions' events.
type Bus interface {
	// Name names the bus in logs, e.g. "usb".
	Name() string
	// Classes are the sysfs directories listing the devices of the bus and
	// of their companions. Coldplug and the resync after a lost event walk
	// them; the bridge hands a bus only events of these subsystems.
	Classes() []Class
	// Match says what the device of ev (of one of the subsystems of
	// Classes) is to the bus. It must not block: it runs for every event.
	Match(ev *Event) Role
	// Describe returns the nub of the device whose add event is d.Event.
	// It returns ErrIncomplete to wait for a companion (Describe is called
	// again when one arrives, or with d.Final when the device's driver
	// bound and none is coming); any other error leaves the device
	// unpublished, logged.
	Describe(d *DeviceInfo) (Nub, error)
}

// Role is what an event's device is to a bus.
type Role struct {
	// Nub: the device gets a nub; its add publishes, its remove
	// terminates it (and everything under its path).
	Nub bool
	// Owner, for a companion device (an sg node, a hidraw node): the
	// DEVPATH of the device whose nub it completes.
	Owner string
}

// DeviceInfo is what Describe knows about a device.
type DeviceInfo struct {
	Event      Event   // the device's add (or move)
	Companions []Event // adds of its companions seen since, in order
	SysfsRoot  string  // where its attributes are read ("/sys" on a real system)
	// Final: no companion is coming (the device's driver bound, or the add
	// already reported one); describe it with what there is.
	Final bool
}

// Nub is a device's nub as a bus describes it.
type Nub struct {
	Class string // e.g. "USBDevice"
	Name  string // e.g. "2-1"
	// Properties; the bridge adds PropDevPath. Numbers are uint64,
	// strings are strings.
	Properties map[string]any
	// Provider is the DEVPATH under which the provider is looked for: the
	// nearest published device at or above it. "" means above the device
	// itself, i.e. its nearest published ancestor.
	Provider string
}

// PropDevPath is the property every nub has: its device's sysfs path.
const PropDevPath = "devpath"

// ErrIncomplete is returned by Bus.Describe for a device that waits for a
// companion.
var ErrIncomplete = errors.New("device waits for a companion")

// busSet indexes buses by the subsystems of their classes.
type busSet struct {
	buses []Bus
	bySub map[string][]Bus
}

func newBusSet(buses []Bus) (*busSet, error) {
	s := &busSet{buses: buses, bySub: map[string][]Bus{}}
	names := map[string]bool{}
	for _, b := range buses {
		if b == nil {
			return nil, errors.New("nil bus")
		}
		if names[b.Name()] {
			return nil, fmt.Errorf("bus %q given twice", b.Name())
		}
		names[b.Name()] = true
		for _, c := range b.Classes() {
			s.bySub[c.Subsystem] = append(s.bySub[c.Subsystem], b)
		}
	}
	return s, nil
}

// match returns the bus that claims ev's device, and how.
func (s *busSet) match(ev *Event) (Bus, Role) {
	for _, b := range s.bySub[ev.Subsystem] {
		if r := b.Match(ev); r.Nub || r.Owner != "" {
			return b, r
		}
	}
	return nil, Role{}
}

// ClassesOf returns the sysfs classes of buses, each once, in order: what
// coldplug (NewColdplug) and the resync (NetlinkConfig.Classes) walk.
func ClassesOf(buses ...Bus) []Class {
	out := []Class{}
	seen := map[Class]bool{}
	for _, b := range buses {
		for _, c := range b.Classes() {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}
