// Package driverproc runs drivers in the process of a driver bundle: the
// Go side of the out-of-process protocol (package driver/host/wire,
// PROTOCOL.md). A bundle's executable is a main package that hands its
// driver-table entries to [Main]:
//
//	func main() { driverproc.Main(hidkbd.Entry) }
//
// The same [drivertable.Entry] and [driver.Driver] code that runs in the
// daemon runs here unchanged. When the daemon starts an instance, Main
// builds a local [driver.Registry] with a nub that mirrors the daemon's (its
// class, name and properties), wires the entry's resources from the device
// descriptors the daemon granted ([devgrant.Resources]), registers the
// entry's personalities and publishes the nub: matching, Probe and Start
// run as in the daemon, and the driver has its work queue, managed
// resources and Monitored values as usual.
//
// The daemon drives the rest: a termination of the daemon's nub or
// instance terminates the local one with the same cause (the driver hears
// ServiceIsTerminated and WillTerminate at once); the local termination
// waits, as the daemon's does, until the daemon's clients have closed the
// instance (did_terminate), and Stop runs before Main answers the daemon's
// stop. Client method calls run the local Service.Call, cancellation
// included; what the driver sends with MessageClients or Notify goes back
// to the daemon, which sends it to its clients. If the local instance
// terminates by itself, the daemon terminates its proxy.
//
// [Run] is Main on a given connection, for tests.
package driverproc
