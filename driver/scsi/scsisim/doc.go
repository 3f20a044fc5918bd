// Package scsisim provides an in-memory SCSI direct-access block device (a
// disk): it answers the commands package scsi issues, keeps written data in
// sparse memory so multi-terabyte capacities cost nothing, and can be told
// to fail commands with chosen sense data, become not ready, or raise a
// unit attention.
//
// The same Disk stands behind the simulated bus of `drvctl serve --sim` and
// behind tests (through scsitest, which re-exports it): used directly as a
// scsi.Transport (NewTransport), and as the logical unit of a usbsim
// bulk-only mass-storage device (it satisfies usbsim.SCSITarget).
package scsisim
