package hidbus

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/hotplug"
)

// ClassDevice is the class of the nubs.
const ClassDevice = "HIDDevice"

// Property keys of the nubs. Numbers are uint64, strings are strings.
const (
	PropBus            = "hidBus"    // bus type: 3 USB, 5 Bluetooth, ... (hid.BusUSB)
	PropVendorID       = "idVendor"  // as USB nubs name it
	PropProductID      = "idProduct" // as USB nubs name it
	PropName           = "hidName"   // HID_NAME
	PropPhys           = "hidPhys"   // HID_PHYS, e.g. usb-0000:00:02.0-1/input0
	PropUniq           = "hidUniq"   // HID_UNIQ (the USB serial), absent when empty
	PropHidraw         = "hidraw"    // e.g. /dev/hidraw0, absent without hidraw
	PropDescriptorSize = "reportDescriptorSize"
	PropUsagePage      = "primaryUsagePage" // of the first top-level collection
	PropUsage          = "primaryUsage"
)

// Where sysfs lists HID devices and hidraw nodes.
var (
	Devices = hotplug.Class{Dir: "bus/hid/devices", Subsystem: "hid"}
	Raw     = hotplug.Class{Dir: "class/hidraw", Subsystem: "hidraw"}
)

// ID is the identity in HID_ID.
type ID struct {
	Bus     uint16
	Vendor  uint32
	Product uint32
}

// ParseID parses HID_ID, "BBBB:VVVVVVVV:PPPPPPPP" in hex (the kernel's
// "%04X:%08X:%08X").
func ParseID(s string) (ID, error) {
	bad := &hotplug.ParseError{Offset: -1, Field: "HID_ID", Reason: strconv.Quote(short(s)) + " is not BBBB:VVVVVVVV:PPPPPPPP"}
	b, rest, ok1 := strings.Cut(s, ":")
	v, p, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || len(b) != 4 || len(v) != 8 || len(p) != 8 {
		return ID{}, bad
	}
	bus, err1 := strconv.ParseUint(b, 16, 16)
	ven, err2 := strconv.ParseUint(v, 16, 32)
	pro, err3 := strconv.ParseUint(p, 16, 32)
	if err1 != nil || err2 != nil || err3 != nil || strings.ContainsAny(s, "+-") {
		return ID{}, bad
	}
	return ID{Bus: uint16(bus), Vendor: uint32(ven), Product: uint32(pro)}, nil
}

func (id ID) String() string { return fmt.Sprintf("%04X:%08X:%08X", id.Bus, id.Vendor, id.Product) }

func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Bus is the HID adapter.
type Bus struct{}

var _ hotplug.Bus = (*Bus)(nil)

// New returns the HID adapter.
func New() *Bus { return &Bus{} }

// Name implements hotplug.Bus.
func (*Bus) Name() string { return "hid" }

// Classes implements hotplug.Bus.
func (*Bus) Classes() []hotplug.Class { return []hotplug.Class{Devices, Raw} }

// Match implements hotplug.Bus: every device of the hid bus gets a nub; a
// hidraw node (…/DEVICE/hidraw/hidrawN) completes its device.
func (*Bus) Match(ev *hotplug.Event) hotplug.Role {
	switch ev.Subsystem {
	case "hid":
		return hotplug.Role{Nub: true}
	case "hidraw":
		if owner, ok := strings.CutSuffix(ev.DevPath, "/hidraw/"+ev.Name()); ok && owner != "" {
			return hotplug.Role{Owner: owner}
		}
	}
	return hotplug.Role{}
}

// Describe implements hotplug.Bus.
func (*Bus) Describe(d *hotplug.DeviceInfo) (hotplug.Nub, error) {
	ev := &d.Event
	id, err := ParseID(ev.Get("HID_ID"))
	if err != nil {
		return hotplug.Nub{}, err
	}
	node := ""
	for i := range d.Companions {
		if n := d.Companions[i].Get("DEVNAME"); n != "" {
			node = "/dev/" + n
		}
	}
	dir := filepath.Join(d.SysfsRoot, ev.DevPath)
	if node == "" {
		if ents, err := os.ReadDir(filepath.Join(dir, "hidraw")); err == nil && len(ents) > 0 {
			node = "/dev/" + ents[0].Name()
		}
	}
	if node == "" && !d.Final {
		return hotplug.Nub{}, hotplug.ErrIncomplete
	}
	m := map[string]any{
		PropBus: uint64(id.Bus), PropVendorID: uint64(id.Vendor), PropProductID: uint64(id.Product),
		PropName: ev.Get("HID_NAME"), PropPhys: ev.Get("HID_PHYS"),
	}
	if u := ev.Get("HID_UNIQ"); u != "" {
		m[PropUniq] = u
	}
	if node != "" {
		m[PropHidraw] = node
	}
	// The descriptor is optional (an unbound device has none yet), and one
	// that does not parse still has a size.
	if desc, err := os.ReadFile(filepath.Join(dir, "report_descriptor")); err == nil && len(desc) > 0 {
		m[PropDescriptorSize] = uint64(len(desc))
		if rd, err := hid.ParseReportDescriptor(desc); err == nil && rd.Collections > 0 {
			m[PropUsagePage], m[PropUsage] = uint64(rd.UsagePage), uint64(rd.Usage)
		}
	}
	return hotplug.Nub{Class: ClassDevice, Name: ev.Name(), Properties: m}, nil
}
