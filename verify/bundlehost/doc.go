// Package bundlehost verifies driver bundles: it runs a bundle's driver out
// of process under the Driver Verifier (package verify) through the
// daemon's own out-of-process host (driver/host), so what is verified is
// what `drvctl serve` runs — the proxy service in the registry, the
// protocol of PROTOCOL.md over a socketpair, the driver's process as the
// manifest's user with only its device granted (driver/devgrant, served
// by the device model's fake).
//
// [Host] is a [verify.RunHost]: each run gets a fresh driver/host.Host on
// the run's registry and device resources (crash counts start again), the
// driver-kill fault SIGKILLs the instance's process at any step, and after
// each run it adds its checks to the verifier's: no driver process, zombie
// or member of a driver's process group is left, and the leaks a driver
// process reported at its stop (protocol 1.1: the host asks for them, the
// Go SDK driver/driverproc traces its references and names the first frame
// outside drvkit — the author's line, across the process boundary) are
// leak problems with that culprit. [Options] also picks the device model
// from the manifest's personalities and the method applications call from
// its [[method]]s.
//
//	m, _ := bundle.Load("./mybundle", bundle.Options{})
//	opts, _ := bundlehost.Options(m, verify.Options{})
//	rep, _ := verify.Verify(ctx, m.Entry(nil), opts)
package bundlehost
