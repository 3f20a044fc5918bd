// Package blockdrv serves the blockdev methods ("inquiry", "capacity",
// "read", "write") over a scsi.Device: what drvkit's sample block drivers
// (usbstorage and sg) share on the driver side. Package blockdev holds the
// method names and the request and reply encodings that applications use.
//
// A device that vanished makes every method fail with an error matching
// both driver.ErrNoDevice and scsi.ErrNoDevice; the daemon sends it to
// the application as userclient.ErrNoDevice.
package blockdrv
