// Package usbsim is an in-memory usb.Backend: scripted devices with
// descriptors, endpoints served by handler functions, kernel drivers bound
// to interfaces (detached on claim and re-attached on release, with every
// change recorded), endpoint halt (stall) semantics, and Unplug, which
// fails in-flight and later calls with usb.ErrNoDevice as a real surprise
// removal does. It stands behind `drvctl serve --sim` (the simulated bus's
// USB devices) and behind tests (through usbtest, which re-exports it).
//
// MassStorage builds a USB mass-storage device (class 08, subclass 06 SCSI,
// protocol 50 bulk-only) around any SCSITarget, such as scsisim.Disk, with
// knobs to inject stalls, phase errors and bad CSWs.
package usbsim
