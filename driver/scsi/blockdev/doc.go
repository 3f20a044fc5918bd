// Package blockdev holds what drvkit's sample SCSI block drivers (the USB
// mass-storage driver and the sg driver) share: the user-client methods
// "inquiry", "capacity", "read" and "write" over a scsi.Device, and the
// wire encoding of their requests and replies, which applications use
// through the Encode/Decode helpers.
//
// Wire format (all integers big-endian):
//
//	inquiry  in: empty                       out: JSON Inquiry
//	capacity in: empty                       out: JSON Capacity
//	read     in: lba u64, blocks u32          out: the blocks' bytes
//	write    in: lba u64, data (whole blocks) out: empty
//
// A device that vanished makes every method fail with an error matching
// both driver.ErrNoDevice and scsi.ErrNoDevice.
package blockdev
