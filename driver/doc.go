// Package driver is drvkit's registry and driver lifecycle: services (nubs
// for devices and interfaces, driver instances, user clients) attached in a
// provider/client graph, personalities matched against nub properties, and
// the termination contract of DESIGN.md:
//
//	terminate(X) < stop(X) < detach(X) < free(X), each exactly once;
//	detach(C from P) < stop(P) for every client C of P;
//	nothing calls into X after free(X); free happens at count zero.
//
// Terminate runs in three phases. Phase 1 runs on the caller: the service and
// every client whose only active provider it was become inactive and are told
// ServiceIsTerminated. Phases 2 and 3 run on the registry's single
// termination worker: WillTerminate root to leaf, ServiceIsRequestingClose to
// clients holding a service open (that branch waits for their Close or their
// death), DidTerminate leaf to root, then leaf first: the work queue is
// stopped (queued jobs cancelled, running jobs drained), Stop, managed
// resources released in reverse order, detach, and the registry drops its
// reference. The object is freed when the last reference goes; TerminateSync
// waits for that and, past its deadline, says what blocks it.
//
// Terminations say why (Cause): TerminateWith and TerminateSyncWith take a
// cause, Unload gives CauseUnload, Close CauseShutdown; the services the
// cascade reaches get CauseProviderTerminated with the first one's cause as
// root cause. ServiceIsTerminated and ServiceIsRequestingClose carry both,
// and a handler gets them before its Stop.
//
// A Service's reference count belongs to the registry: drivers take their
// own references with TaggedRetain and TaggedRelease (provider.TaggedRetain(s)
// records an ownership edge s → provider), never an untagged Release.
//
// The worker never blocks on driver code it does not own: when a service's
// callbacks are busy, a client still has it open or a job still runs, the
// worker parks that branch and carries on with the others.
//
// Callbacks into one service (Probe, Start, Stop, WillTerminate,
// DidTerminate, Message) never run concurrently. Client methods (Call) run
// on the caller's goroutine, concurrently with those, but termination
// drains them, like jobs, before Stop. A panic in any of them is recovered
// into a *PanicError, logged with log/slog, and the registry carries on.
//
// A client that holds its provider open must close it when asked
// (ServiceIsRequestingClose), or in its WillTerminate or DidTerminate —
// which run before the provider waits — not in Stop, which runs after: the
// provider's termination waits for the close, and TerminateSync names the
// client that holds it. A client that is not a MessageHandler is closed for
// it.
//
// Monitored values (Monitored, Group, View) carry state written by callbacks
// and read by the driver as immutable snapshots: readers never lock and never
// see a torn value, and a View sees several values as of one instant.
package driver
