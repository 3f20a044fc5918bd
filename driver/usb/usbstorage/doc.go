// Package usbstorage is a sample user-space USB mass-storage driver for
// drvkit: a driver.Personality matching USBInterface nubs of class 08,
// subclass 06 (SCSI transparent), protocol 50 (bulk-only), which opens the
// device through a usb.Backend, speaks bulk-only transport to it (the
// kernel's usb-storage is detached, and re-attached when the driver stops)
// and offers the blockdev client methods inquiry, capacity, read and write.
//
// On surprise removal, calls in flight and later fail with an error
// matching driver.ErrNoDevice, and the service terminates normally.
package usbstorage
