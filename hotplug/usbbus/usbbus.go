package usbbus

import (
	"github.com/drvkit/drvkit/hotplug"
)

// Nub classes.
const (
	ClassDevice    = "USBDevice"
	ClassInterface = "USBInterface"
)

// Property keys of the nubs. Numbers are uint64, strings are strings.
const (
	PropVendorID      = "idVendor"     // device and interface
	PropProductID     = "idProduct"    // device and interface
	PropBcdDevice     = "bcdDevice"    // device
	PropDeviceClass   = "bDeviceClass" // device
	PropDeviceSub     = "bDeviceSubClass"
	PropDeviceProto   = "bDeviceProtocol"
	PropBusNum        = "busnum"
	PropDevNum        = "devnum"
	PropPort          = "port"
	PropDevNode       = "devnode" // device: /dev/bus/usb/BBB/DDD
	PropManufacturer  = "manufacturer"
	PropProduct       = "product"
	PropSerial        = "serial"
	PropSpeed         = "speed"            // device: Mbit/s as sysfs says it ("480", "5000", "1.5")
	PropIfaceNumber   = "bInterfaceNumber" // interface
	PropIfaceClass    = "bInterfaceClass"
	PropIfaceSub      = "bInterfaceSubClass"
	PropIfaceProto    = "bInterfaceProtocol"
	PropConfiguration = "bConfigurationValue"
)

// Devices is where sysfs lists USB devices and interfaces.
var Devices = hotplug.Class{Dir: "bus/usb/devices", Subsystem: "usb"}

// Bus is the USB adapter.
type Bus struct{}

var _ hotplug.Bus = (*Bus)(nil)

// New returns the USB adapter.
func New() *Bus { return &Bus{} }

// Name implements hotplug.Bus.
func (*Bus) Name() string { return "usb" }

// Classes implements hotplug.Bus.
func (*Bus) Classes() []hotplug.Class { return []hotplug.Class{Devices} }

// Match implements hotplug.Bus: devices and interfaces get nubs (not the
// usb subsystem's endpoints and ports, which have other DEVTYPEs).
func (*Bus) Match(ev *hotplug.Event) hotplug.Role {
	return hotplug.Role{Nub: ev.Subsystem == "usb" && (ev.DevType == "usb_device" || ev.DevType == "usb_interface")}
}

// Describe implements hotplug.Bus. The strings of a device (manufacturer,
// product, serial) are read from sysfs; a device without them has none.
func (*Bus) Describe(d *hotplug.DeviceInfo) (hotplug.Nub, error) {
	ev := &d.Event
	// Filled in place, sized for what a device has (14 keys at most):
	// a nub is described for every USB uevent.
	m := make(map[string]any, 14)
	if ev.DevType == "usb_interface" {
		in, err := ev.USBInterface()
		if err != nil {
			return hotplug.Nub{}, err
		}
		m[PropVendorID], m[PropProductID] = uint64(in.Vendor), uint64(in.Product)
		m[PropIfaceNumber], m[PropIfaceClass] = uint64(in.Number), uint64(in.Class)
		m[PropIfaceSub], m[PropIfaceProto] = uint64(in.SubClass), uint64(in.Protocol)
		m[PropConfiguration] = uint64(in.Configuration)
		return hotplug.Nub{Class: ClassInterface, Name: in.Name, Properties: m}, nil
	}
	dev, err := ev.USBDevice()
	if err != nil {
		return hotplug.Nub{}, err
	}
	_ = dev.ReadAttrs(d.SysfsRoot, ev.DevPath) // strings are optional
	m[PropVendorID], m[PropProductID] = uint64(dev.Vendor), uint64(dev.Product)
	m[PropBcdDevice], m[PropDeviceClass] = uint64(dev.BcdDevice), uint64(dev.Class)
	m[PropDeviceSub], m[PropDeviceProto] = uint64(dev.SubClass), uint64(dev.Protocol)
	m[PropBusNum], m[PropDevNum] = uint64(dev.BusNum), uint64(dev.DevNum)
	m[PropPort] = dev.Port
	if dev.DevName != "" {
		m[PropDevNode] = "/dev/" + dev.DevName
	}
	for _, v := range [...]struct{ k, v string }{{PropManufacturer, dev.Manufacturer}, {PropProduct, dev.ProductName}, {PropSerial, dev.Serial}, {PropSpeed, dev.Speed}} {
		if v.v != "" {
			m[v.k] = v.v
		}
	}
	return hotplug.Nub{Class: ClassDevice, Name: dev.Port, Properties: m}, nil
}
