// Package refcount is drvkit's reference counting: an Object embedded in
// every managed object, tagged retain and release, and — when tracing is on —
// a record of who holds what and where they took it, so that a leaked
// reference is found from a report instead of by matching log lines by hand.
//
// The untraced path is a single atomic add. Tracing is enabled per class or
// for all classes, at run time (Trace, TraceAll) or with the environment
// variable DRVKIT_REFTRACE=all or DRVKIT_REFTRACE=ClassA,ClassB.
package refcount
