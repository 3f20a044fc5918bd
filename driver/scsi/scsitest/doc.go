// Package scsitest provides an in-memory SCSI direct-access block device
// (a disk) for tests: it answers the commands package scsi issues, keeps
// written data in sparse memory so multi-terabyte capacities cost nothing,
// and can be told to fail commands with chosen sense data, become not
// ready, or raise a unit attention.
//
// The same Disk stands behind both fakes of drvkit: used directly as a
// scsi.Transport (NewTransport), and as the logical unit of a usbtest
// bulk-only mass-storage device (it satisfies usbtest.SCSITarget).
package scsitest
