// Package devgrant hands a device to a driver that runs in another
// process, with least privilege: the daemon (root) opens exactly the device
// behind the nub a driver instance was matched to — the hidraw node, the
// /dev/sgN node, the usbfs device after claiming the matched interface
// (its handle then limited to that interface), or, on the simulated bus, a
// SOCK_SEQPACKET socket served by the fake device — and the driver process
// receives only those descriptors (SCM_RIGHTS). On the driver's side the
// descriptors become the same drivertable resources (hidraw, sg, usb) an
// in-process driver gets, so the driver's code does not change; a node
// that was not granted is refused with ErrNotGranted.
//
// The daemon side is [Open] → [Grant] (send its Files in order with their
// Resource, Node and Kind; Close it once the driver process is gone); the
// driver side is [Resources] over the [Received] files. Each provider
// class is a [Class] registered with [Register]: HIDDevice, SCSIDevice
// and USBInterface are built in. docs/devgrant.md documents what a driver
// receives per class and the socket protocol.
package devgrant
