// Package sg is a sample drvkit driver for SCSI devices reached through
// their Linux SCSI generic node: a driver.Personality matching SCSIDevice
// nubs of peripheral type 0 (disk) or 5 (CD/DVD) that have an sg node,
// which opens the node with SG_IO and offers the blockdev client methods
// inquiry, capacity, read and write.
//
// On surprise removal, calls in flight and later fail with an error
// matching driver.ErrNoDevice, and the service terminates normally.
package sg
