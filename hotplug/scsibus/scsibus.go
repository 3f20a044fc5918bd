package scsibus

import (
	"os"
	"path/filepath"

	"github.com/drvkit/drvkit/hotplug"
)

// ClassDevice is the class of the nubs.
const ClassDevice = "SCSIDevice"

// Property keys of the nubs.
const (
	PropType     = "type" // peripheral device type (uint64)
	PropVendor   = "vendor"
	PropModel    = "model"
	PropRevision = "revision"
	PropHCTL     = "hctl"
	PropSG       = "sg" // /dev/sgN, absent without the sg driver
)

// Where sysfs lists SCSI devices (hosts, targets, LUNs) and sg nodes.
var (
	Devices = hotplug.Class{Dir: "bus/scsi/devices", Subsystem: "scsi"}
	Generic = hotplug.Class{Dir: "class/scsi_generic", Subsystem: "scsi_generic"}
)

// Bus is the SCSI adapter.
type Bus struct{}

var _ hotplug.Bus = (*Bus)(nil)

// New returns the SCSI adapter.
func New() *Bus { return &Bus{} }

// Name implements hotplug.Bus.
func (*Bus) Name() string { return "scsi" }

// Classes implements hotplug.Bus.
func (*Bus) Classes() []hotplug.Class { return []hotplug.Class{Devices, Generic} }

// Match implements hotplug.Bus: LUNs get nubs (hosts and targets do not),
// sg nodes complete their LUN.
func (*Bus) Match(ev *hotplug.Event) hotplug.Role {
	switch {
	case ev.Subsystem == "scsi" && ev.DevType == "scsi_device":
		return hotplug.Role{Nub: true}
	case ev.Subsystem == "scsi_generic":
		if g, err := ev.SCSIGeneric(); err == nil {
			return hotplug.Role{Owner: g.DevicePath}
		}
	}
	return hotplug.Role{}
}

// Describe implements hotplug.Bus: the INQUIRY strings come from sysfs, the
// sg node from its add event or sysfs.
func (*Bus) Describe(d *hotplug.DeviceInfo) (hotplug.Nub, error) {
	ev := &d.Event
	dev, err := ev.SCSIDevice()
	if err != nil {
		return hotplug.Nub{}, err
	}
	sg := ""
	for i := range d.Companions {
		if g, err := d.Companions[i].SCSIGeneric(); err == nil && g.DevNode != "" {
			sg = g.DevNode
		}
	}
	if sg == "" {
		sg = findSG(d.SysfsRoot, ev.DevPath)
	}
	if sg == "" && !d.Final {
		return hotplug.Nub{}, hotplug.ErrIncomplete
	}
	_ = dev.ReadAttrs(d.SysfsRoot, ev.DevPath)
	name := dev.HCTL.String()
	m := map[string]any{PropHCTL: name}
	if dev.Type >= 0 {
		m[PropType] = uint64(dev.Type)
	}
	for k, v := range map[string]string{PropVendor: dev.Vendor, PropModel: dev.Model, PropRevision: dev.Revision, PropSG: sg} {
		if v != "" {
			m[k] = v
		}
	}
	return hotplug.Nub{Class: ClassDevice, Name: name, Properties: m}, nil
}

// findSG looks for the LUN's sg node in sysfs.
func findSG(root, devpath string) string {
	ents, err := os.ReadDir(filepath.Join(root, devpath, "scsi_generic"))
	if err != nil || len(ents) == 0 {
		return ""
	}
	return "/dev/" + ents[0].Name()
}
