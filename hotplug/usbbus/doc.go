// Package usbbus is the hotplug bus adapter for USB: a usb_device uevent
// becomes a USBDevice nub with its descriptor properties, a usb_interface
// uevent a USBInterface nub under its device (root hubs are USBDevice nubs
// too, so a device hangs under its hub as in the kernel's tree).
// Properties use IOKit's names for the USB descriptor fields.
//
// The adapter is a hotplug.Bus: the bridge (hotplug.NewBridge) calls Match
// for every uevent of the usb subsystem and Describe for the adds it
// claims; coldplug and the resync after lost events walk Devices. A driver
// matches the nubs by these properties (driver.MatchValue(PropVendorID,
// 0x0781)); a USB driver (driver/usb/usbstorage) then opens, through
// package driver/usb, the device its nub names by bus and device number.
package usbbus
