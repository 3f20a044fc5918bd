// Package hotplugtest builds fake sysfs trees for tests of code that
// enumerates devices or reads their attributes (hotplug.Walk, coldplug,
// the resync after a lost netlink message, the bridge's attribute reads)
// on machines without the hardware.
//
// A tree is described by a dump, one line per entry, in the format of
// drvkit's capture of a QEMU guest (hotplug/testdata/sysfs/qemu-sysfs.txt):
// bus and class links (SYSDIR), attribute files (SYSATTR), driver links
// (SYSLINK) and the lines of each device's uevent file (SYSUEVENT).
// BuildSysfs materializes a dump under any directory, refusing paths that
// leave it; QEMUSysfs builds one into a test's temporary directory.
//
// The simulated uevent source (package hotplug/sim) keeps its own tree in
// step with the devices it plugs (sim.Config.SysfsDir); use this package
// when a test needs a fixed machine rather than a scenario.
package hotplugtest
