// Package buses is the set of bus adapters drvkit ships, for callers that
// want them all:
//
//	b := hotplug.NewBridge(reg, hotplug.BridgeConfig{Buses: buses.Default()})
//	src, err := hotplug.NewNetlink(hotplug.NetlinkConfig{Classes: hotplug.ClassesOf(buses.Default()...)})
//
// Adding a bus to drvkit is one line here; a program that wants fewer (or
// its own) passes its own list instead.
package buses
