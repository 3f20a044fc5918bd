// Package scsi is drvkit's SCSI command layer: CDB builders and response
// parsers for the block commands a user-space disk driver needs (INQUIRY,
// TEST UNIT READY, READ CAPACITY(10/16), READ(10/16), WRITE(10/16),
// REQUEST SENSE, SYNCHRONIZE CACHE), sense data decoded into a typed
// SenseError, and a Device that issues those commands over any Transport.
//
// Two transports are provided: SG_IO on a Linux /dev/sgN node (OpenSG) and
// the USB Mass Storage bulk-only transport over a driver/usb device (NewBOT).
// Package scsisim (scsitest in tests) provides an in-memory disk target usable as a Transport
// and, through usbsim, as a USB mass-storage device.
//
// Errors are matchable with errors.Is: a failed command returns a
// *SenseError that matches ErrNotReady, ErrMediumError, ErrIllegalRequest,
// ErrUnitAttention, ...; a device that vanished returns an error matching
// ErrNoDevice; transport failures are wrapped in *OpError.
package scsi
