// Package devgrant hands a device to a driver that runs in another
// process, with least privilege: the daemon (root) opens exactly the device
// behind the nub a driver instance was matched to — the hidraw node, the
// /dev/sgN node, the usbfs device after claiming the matched interface, or,
// on the simulated bus, a socket served by the fake device — and the driver
// process receives only those descriptors (SCM_RIGHTS). On the driver's side
// the descriptors become the same drivertable resources (hid, sg, usb) an
// in-process driver gets, so the driver's code does not change.
//
// The daemon side is [Open] → [Grant]; the driver side is [Resources] over
// the [Received] files.
package devgrant
