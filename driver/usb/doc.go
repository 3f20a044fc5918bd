// Package usb is drvkit's small USB access layer for user-space drivers:
// a Backend opens devices by bus/address or vendor:product[:serial], and a
// Device claims interfaces and moves data with bulk, interrupt and control
// transfers that honour a context.
//
// The real Backend (NewGousb, Linux with cgo) sits on gousb/libusb and
// adds what a driver manager needs around it: the libusb context exists
// only while someone uses USB (its event loop wakes every 100 ms), a
// failed libusb initialisation is an error rather than a panic, and kernel
// drivers that drvkit detaches to claim an interface are recorded and
// re-attached when the interface is released, the device closed, or the
// daemon exits (ReattachAll).
//
// Package usbsim (usbtest in tests) provides a scripted in-memory Backend whose devices can
// be unplugged in the middle of a transfer.
//
// Errors match ErrNoDevice, ErrBusy, ErrTimeout, ErrNotFound, ErrStall, ...
// with errors.Is and are wrapped in *OpError naming the operation.
package usb
