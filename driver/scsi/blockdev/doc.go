// Package blockdev is the application-facing protocol of drvkit's sample
// SCSI block drivers (the USB mass-storage driver and the sg driver): the
// names of their user-client methods "inquiry", "capacity", "read" and
// "write", and the encoding of their requests and replies, which
// applications use through the Encode/Decode helpers.
//
// Wire format (all integers big-endian):
//
//	inquiry  in: empty                       out: JSON Inquiry
//	capacity in: empty                       out: JSON Capacity
//	read     in: lba u64, blocks u32          out: the blocks' bytes
//	write    in: lba u64, data (whole blocks) out: empty
//
// It imports nothing of drvkit, so that an application linking it (with
// package userclient) links none of the registry or the transports. The
// driver side, the methods over a scsi.Device, is package blockdrv.
package blockdev
