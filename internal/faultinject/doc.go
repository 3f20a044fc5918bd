// Package faultinject lets tests pause, delay, fail or panic the drvkit
// lifecycle at named points, and run arbitrary actions (kill a client,
// unplug a device, unload a driver) at exactly such a point.
//
// The driver package (and userclient/server) call At at each point. With no
// Injector installed At is one atomic pointer load and a nil compare, and
// inlines into its caller: the hooks cost nothing measurable when unused
// (see BenchmarkHooks in driver and the README's reliability section).
//
// It is internal: the points are where the implementation happens to
// make progress, not a stable API, and the only users are drvkit's own
// scenario explorer and tests. Drivers test their own failure handling
// with the usbtest and scsitest fakes instead.
//
// Only one Injector is installed at a time (Install refuses a second):
// tests using it must not run in parallel with each other.
package faultinject
