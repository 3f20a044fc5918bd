// Package usbhold keeps the kernel's drivers off the USB interfaces that a
// loaded personality will claim, so that a stick drvkit drives never shows
// up as a kernel disk (/dev/sdX) first.
//
// The kernel binds its driver (usb-storage, uas, usbhid, ftdi_sio, ...) in
// the same call that creates the interface, before any uevent reaches user
// space: a udev rule or a daemon reacting to the interface's add event is
// always too late, and detaching afterwards leaves the disk visible for the
// 85–284 ms the SCSI scan and the detach take — long enough for an
// automounter. What the kernel checks before it binds is the interface's
// authorization: an interface created while its root hub's
// interface_authorized_default is 0 is not probed, and authorizing it later
// does not probe it either (writing its name to /sys/bus/usb/drivers_probe
// does). A usbfs claim of an unauthorized interface fails with ENODEV.
//
// So while a personality on USBInterface nubs is loaded, the hold sets
// interface_authorized_default to 0 on every root hub (a gate), and decides
// for each interface as it arrives, from its add uevent:
//
//   - a loaded personality matches it (the registry's own matching, masks
//     included: [driver.Personality.Matches]): the interface is held — it
//     stays unauthorized, without a kernel driver, until drvkit's driver
//     claims it through usbfs. The backend of [Hold.Wrap] authorizes it
//     just before that claim ([Hold.Claim]), once the kernel has finished
//     configuring the device: the add uevent leaves the kernel before its
//     first probe of the interface, so an authorization written as soon as
//     the uevent arrives can win that race and let the kernel's driver bind
//     (seen in the QEMU guest);
//   - none does: it is authorized and probed at once, and the kernel's
//     driver binds as it would have, one uevent round trip later.
//
// A held interface is given back (probed) as soon as no driver instance is
// attached to its nub any more: its driver stopped, was unloaded, or failed
// to start ([Hold.Watch]) — unless a crashed driver is being relaunched on
// it ([Config.Relaunching]), which keeps it held until the driver is back. When the last USB personality goes, or the daemon
// stops ([Hold.Close]), every gate is lifted and every interface the hold
// kept is authorized and probed.
//
// What the hold changed is written to a state file before it is changed. A
// daemon killed with gates set leaves new interfaces unauthorized until
// [Recover] runs — at the next start, or by hand (`drvctl unhold`, systemd's
// ExecStopPost) — which lifts the gates it finds recorded, authorizes and
// probes what they kept, and probes the held interfaces left driverless.
//
// A root hub whose interface_authorized_default is already 0 belongs to
// someone else's policy (usbguard): the hold leaves it alone, and
// authorizes nothing on it.
//
// [Rules] renders what the loaded personalities hold, for logs and
// documentation.
package usbhold
