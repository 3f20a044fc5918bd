// Package lifecycletest checks lifecycle traces of a driver.Registry
// against the termination contract of DESIGN.md, the rules every drvkit
// test holds its registry to:
//
//   - terminate(X) < stop(X) < detach(X) < free(X), each at most once
//     (detach once per provider edge), and a freed or stopped service has
//     all the earlier steps;
//   - detach(C from P) < stop(P) for every client C attached to P;
//   - nothing mentions X after free(X), and free happens at count zero;
//   - once the trace is complete (Check), every terminated service went
//     all the way to free.
//
// In a test, Record subscribes to the registry from the start and Check
// validates what it saw once the registry is quiet:
//
//	r := driver.NewRegistry()
//	rec := lifecycletest.Record(t, r)
//	// ... publish, open, unplug ...
//	require.NoError(t, r.WaitQuiet(ctx))
//	rec.Check(t)
//
// Recorder.Steps renders the trace as "step name" lines for exact-order
// assertions. Validate checks any trace, such as one recorded from a
// running daemon with `drvctl monitor -o json` and read back with
// ReadMonitorJSON, e.g. in the CI of an application embedding drvkit.
package lifecycletest
