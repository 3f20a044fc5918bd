// Package sim is a simulated kernel: a hotplug.Source that replays
// scenario files (plug and unplug USB devices, add and remove SCSI LUNs,
// bind and unbind interface drivers, waits) with the uevent sequences the
// kernel produces for them, byte for byte for the devices of the QEMU
// capture in hotplug/testdata, so every lifecycle path can be driven
// without hardware, deterministically.
//
// A sysfs mirror (Config.SysfsDir) is kept up to date before each event is
// delivered, as the kernel does, laid out by the buses' classes, so
// coldplug, the resync and the bridge's attribute reads work on simulated
// devices. A live simulator (Config.Live) takes further steps at run time
// through Inject, which runs them exactly as a scenario does.
//
// The scenario format is described in testdata/scenarios/README.md.
package sim
