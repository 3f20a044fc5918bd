// Package hidsim is a scriptable in-memory hid.Backend: HID devices plugged
// at a node name, input reports injected (Input), output and feature
// reports recorded or answered by hooks, and Unplug, which ends reads in
// progress and every later call with hid.ErrNoDevice, as a real surprise
// removal does. It stands behind `drvctl serve --sim` (the simulator's
// `hid input` steps reach drivers through it) and behind tests.
//
// It behaves as hidraw does where a driver can tell: each open handle gets
// its own copy of every report, bounded to the newest 64 (hidraw's
// HIDRAW_BUFFER_SIZE), reports already queued are still read after an
// unplug before ErrNoDevice comes, and an output report of the wrong size
// for the descriptor is refused. One departure: reports sent before the
// first open are kept (up to 64) for the first handle, so a scenario that
// plugs a keyboard and types at once does not race the driver's Start.
//
// A device is plugged directly (Plug) or from the sysfs mirror of the
// hotplug simulator (PlugSysfs: the identity and report descriptor
// package hotplug/sim wrote for a `plug usb … hid=keyboard` step), which is
// how the daemon's simulated bus gives each hidraw node a device before
// the bridge publishes its nub.
package hidsim
