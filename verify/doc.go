// Package verify is drvkit's Driver Verifier: it explores a driver through
// every lifecycle fault and reports, for the first failure, the culprit —
// the first frame outside drvkit — the full report, and a one-line
// command that replays it.
//
// Given a driver (a drivertable.Entry: a built-in driver, or a bundle run
// out of process by a RunHost — verify/bundlehost wires driver/host) and a
// device model (USBMassStorage
// or USB with interfaces of your own, SCSIDisk, HIDKeyboard — configurable
// descriptors, disk geometry and INQUIRY data), Verify builds a real
// topology for every run: a registry with the driver loaded, the device
// plugged through the simulated kernel (hotplug/sim) and the hotplug
// bridge, so the nubs carry exactly the properties of a real machine, and
// applications doing I/O — in-process user clients and, where a schedule
// asks for it, an application process talking to a userclient server over
// a Unix socket (the running binary re-executed; this package's init runs
// it, so a test binary or drvctl needs no TestMain).
//
// It then runs schedules:
//
//   - systematic: every lifecycle step (Steps: publish, probe, start,
//     open, call, the terminate hooks, stop, submit, job, jobFree,
//     detach, free, and the socket's handshake, read, write) × every fault
//     kind (FaultKinds: unplug, app-kill — a real SIGKILL —, app-close,
//     unload, terminate, panic in the callback, fail, job-hang,
//     job-panic, io-error, no-device mid-transfer, slow, and driver-kill
//     for drivers run by an out-of-process host: their process
//     SIGKILLed), one pair per run; a pair at a callback step the driver
//     lacks (Probe, the terminate hooks) is unreached without a run;
//   - random: seeded interleavings of up to three faults, random jitter,
//     I/O time and teardown order, for a count or time budget.
//
// After every run it checks the lifecycle trace against the invariants
// (driver/lifecycletest), that nothing outlives the run — reference-counted
// objects (with the refcount report), goroutines, file descriptors, child
// processes, and for a bundle its driver processes and what they report
// leaking (RunHost) —, that every job's free hook ran exactly once, that nothing
// reached a service after its Stop or free, that every application heard
// ServiceIsTerminated with the cause the trace gives, and what the device
// model says (handles left open, a kernel driver not re-attached). A
// failure is shrunk (faults, teardown steps, jitter, I/O time dropped while
// it still fails) and reported with its culprit, schedule and replay.
//
// verifytest.Run is the go test integration: each schedule a subtest, a failure a
// test error with a `go test … -verify.replay=…` command. `drvctl verify
// DRIVER` is the command line. Fault kinds are registered (RegisterFault),
// not switched: the out-of-process host adds its own, and tests add probes.
package verify
