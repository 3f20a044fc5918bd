// Package leaktest is drvkit's test harness for leaks: Check(t) fails a
// test that leaves reference-counted objects or goroutines behind, with the
// full refcount report (class, ID, holders with stacks, why-alive chains,
// cycles); Main(m) does the same for a whole test binary.
//
// # Which objects belong to a test
//
// Only traced objects are visible (Check and Main turn tracing on for every
// class if nothing is traced yet; DRVKIT_REFTRACE=off keeps it off). A
// traced object records, at Init, the goroutine that created it and the
// goroutine that started that one. Check records the test's goroutine. An
// object belongs to the test whose goroutine created it or started, directly
// or through other goroutines, the goroutine that created it. That is what
// makes Check work under t.Parallel(): two parallel tests each see only what
// they created, however their lifetimes overlap.
//
// When the chain of goroutines cannot be followed to a test (a goroutine in
// the chain ended before its parent was learned, or the object was created
// by a goroutine no test started, such as a package-level worker), the
// object is attributed by time: it belongs to every checked test that was
// running when it was created. The report says so for each such object.
//
// # Which goroutines belong to a test
//
// A test that is not parallel uses goleak with IgnoreCurrent taken when Check
// is called: any goroutine started since then and still running is a leak.
// A parallel test cannot, because its neighbours start goroutines too: it
// reports the goroutines still running that descend from its own goroutine.
//
// # Waiting
//
// Objects and goroutines are often released asynchronously by workers, so
// the cleanup retries for up to Timeout (default 5s) before failing.
package leaktest
