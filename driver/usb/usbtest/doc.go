// Package usbtest is an in-memory usb.Backend for tests: scripted devices
// with descriptors, endpoints served by handler functions, kernel drivers
// bound to interfaces (detached on claim and re-attached on release, with
// every change recorded), endpoint halt (stall) semantics, and Unplug,
// which fails in-flight and later calls with usb.ErrNoDevice as a real
// surprise removal does.
//
// MassStorage builds a USB mass-storage device (class 08, subclass 06 SCSI,
// protocol 50 bulk-only) around any SCSITarget, such as scsitest.Disk, with
// knobs to inject stalls, phase errors and bad CSWs.
package usbtest
