// Package sim is a simulated kernel: a hotplug.Source that replays
// scenario files (plug and unplug USB devices, add and remove SCSI LUNs,
// bind and unbind interface drivers, waits) with the uevent sequences the
// kernel produces for them, byte for byte for the devices of the QEMU
// capture in hotplug/testdata, so every lifecycle path can be driven
// without hardware, deterministically.
//
// A sysfs mirror (Config.SysfsDir) is kept up to date, laid out by the
// buses' classes, so coldplug, the resync and the bridge's attribute reads
// work on simulated devices. It is updated once per step, before the
// step's first event is delivered: while the events of one step are read,
// sysfs already shows the step's end state (a LUN's sg node is listed
// before the node's add arrives), as on a kernel whose uevent reader lags. A live simulator (Config.Live) takes further steps at run time
// through Inject, which runs them exactly as a scenario does.
//
// The scenario format is described in testdata/scenarios/README.md.
package sim
