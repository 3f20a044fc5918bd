// Package reliability holds drvkit's scenario explorer: tests that build a
// real topology (a USB device with two interfaces arriving through the
// hotplug simulator and bridge, the usbstorage driver on the usbtest fake,
// a test driver with jobs, client methods and every lifecycle callback,
// clients doing I/O) and then inject every fault at every lifecycle step
// (internal/faultinject): a client killed, the device unplugged, a driver
// unloaded, a driver panic, a job hanging past its deadline, a failing
// step. Random interleavings add random delays and faults, seeded; a
// failing seed is printed and replayed with -explore.seed.
//
// Every run checks the lifecycle trace against the DESIGN.md invariants
// (driver/lifecycletest), that no reference-counted object and no
// goroutine outlives it, that every job's Free ran exactly once, that no
// callback reached a driver after its Stop, that the fake USB device got
// its kernel driver back and no handle stayed open; a watchdog dumps the
// goroutines and the registry's blocker report when a run overstays.
//
// `make stress` runs ten thousand random scenarios (a share under -race)
// and prints a summary table; `go test` runs the full (fault, step)
// enumeration and a fixed-seed sample.
package reliability
