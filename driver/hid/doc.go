// Package hid is drvkit's transport for HID devices over the kernel's
// hidraw interface (/dev/hidrawN): open a node, read input reports with a
// context, write output reports, set and get feature reports
// (HIDIOCSFEATURE, HIDIOCGFEATURE), read the report descriptor and the
// device's bus type and ids. When the device is unplugged, every call —
// including a read already waiting — fails with ErrNoDevice
// (driver.ErrNoDevice, so it crosses the daemon's socket typed).
//
// Backend is what a driver is given: Hidraw on Linux, or hidsim's
// scriptable fake behind the same interface (tests, `drvctl serve --sim`).
// ParseReportDescriptor decodes a report descriptor far enough to match
// and size reports: its top-level usage and the size of each report.
package hid
