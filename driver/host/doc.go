// Package host runs the drivers of driver bundles out of process, as
// DriverKit does: each instance that a bundle's personality wins is a
// proxy service in the daemon's registry, and its driver runs in a process
// of its own, spawned when the instance's Start runs, speaking the
// protocol of package driver/host/wire (PROTOCOL.md) over a socketpair.
//
// The process runs as the manifest's user and group (when the daemon is
// root; otherwise as the daemon's user), with no_new_privs, a parent-death
// signal (SIGKILL), in a process group of its own, with a clean
// environment and only the socket inherited (descriptor 3); its stdout and
// stderr go to the daemon's log, tagged with the driver and pid. The
// device descriptors of the nub (package driver/devgrant) travel with the
// start message (SCM_RIGHTS).
//
// The proxy forwards the lifecycle: Start (handshake, then start), the
// nub's messages, WillTerminate, DidTerminate and Stop (did_terminate and
// stop are sent by a job of the instance, so that a driver that does not
// answer holds up only its own branch of the termination, visibly, and is
// killed after its stop timeout), and the client methods the manifest
// declares (max_input and max_output are enforced here). What the driver
// sends its clients (notify) is posted to the proxy's clients.
//
// A process that exits, is killed or breaks the protocol while its
// instance is active is a crash: the instance is terminated with cause
// [driver.CauseCrashed] (its user clients hear ServiceIsTerminated
// "crashed"), and once it is gone matching runs again on its nub after the
// manifest's backoff, which relaunches the driver. After max_crashes
// crashes within the window the bundle is disabled (its personalities
// unregistered) and [Host.Status] says why. No process is left unwaited,
// no descriptor open, no goroutine running once an instance is freed.
package host
