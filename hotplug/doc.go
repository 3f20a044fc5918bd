// Package hotplug turns device arrivals and departures into events drvkit can
// act on: real kernel uevents from a netlink socket, a coldplug walk of sysfs
// for what is already there, and (package hotplug/sim) a simulator that
// replays scenario files with the exact uevent sequences the kernel produces.
//
// Every producer implements Source, so the consumer (the bridge into the
// driver registry) treats the kernel, coldplug and the simulator alike.
//
// What each kind of device becomes is told by a Bus: the adapters
// hotplug/usbbus, hotplug/scsibus and hotplug/hidbus, listed by
// hotplug/buses.Default. The bridge publishes and terminates nubs through
// them; coldplug and the resync walk the sysfs classes they name
// (ClassesOf).
//
// Event is a parsed kernel uevent. Parse is allocation-light (one string per
// datagram; every field is a substring of it) because a storm of events must
// not become a storm of garbage. Typed views (USBDevice, USBInterface,
// SCSIDevice, SCSIGeneric, Block) decode the environment of the subsystems
// drvkit drives; attributes the uevent does not carry (USB strings, SCSI
// INQUIRY strings) are read from sysfs with ReadAttrs.
//
// The netlink source only accepts messages the kernel sent: sender port id 0
// and SCM_CREDENTIALS uid 0. Anything else — a user-space process multicasting
// to the uevent group, the udev CVE-2009-1185 attack — is dropped and counted.
// When the kernel drops events because the receive buffer overflowed
// (ENOBUFS), the source re-reads sysfs, diffs against what it reported and
// emits the missing adds and removes, so a remove is never lost. A device
// re-created at the same path while events were lost is told apart by the
// inode of its sysfs directory, which kernfs never reuses at once. The
// bookkeeping is a Tracker, usable on its own.
//
// Bridge feeds a driver.Registry: each device a Bus claims becomes a nub as
// the bus describes it (USB devices USBDevice nubs, their interfaces
// USBInterface nubs, SCSI LUNs SCSIDevice nubs, HID devices HIDDevice
// nubs), a client of the nearest published ancestor (a LUN of its USB
// storage interface, a HID device of its USB interface). A remove terminates the nub and everything under its
// path (surprise removal); a duplicate add or a change is delivered to the
// nub's drivers as MessageDeviceChanged. Publishing — matching and the
// drivers' Start — runs on the bridge's own goroutine, so an unplug is
// handled while a Start is still running and cancels it.
package hotplug
