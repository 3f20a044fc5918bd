// Package hidbus is the hotplug bus adapter for HID: a device of the
// kernel's hid bus (SUBSYSTEM=hid, e.g. .../2-1:1.0/0003:046D:C31C.0001)
// becomes a HIDDevice nub under its transport's nub — the USB interface of
// a USB keyboard — with its bus type, vendor and product (HID_ID), name,
// physical path and unique id (HID_NAME, HID_PHYS, HID_UNIQ), the size and
// top-level usage of its report descriptor (read from sysfs), and its
// hidraw node, which drivers open with package driver/hid.
//
// The hidraw node is a companion: the device is published when the node's
// add arrives (or at once if sysfs already has it), or without a node when
// the device's driver bound and none came (hidraw not built).
//
// The adapter is a hotplug.Bus; package driver/hid/hidkbd is a driver for
// its nubs. It imports driver/hid only to read the report descriptor.
package hidbus
