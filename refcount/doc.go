// Package refcount is drvkit's reference counting: an Object embedded in
// every managed object, tagged retain and release, and — when tracing is on —
// a record of who holds what and where they took it, so that a leaked
// reference is found from a report instead of by matching log lines by hand.
//
// # Counting
//
// Init sets the count to 1 (the creator's reference); free runs exactly
// once, when the count reaches zero. Misuse — a release below zero, a
// retain after free (resurrection), a tagged release whose tag holds
// nothing, a count that would overflow — is reported as an *Error, which
// panics by default; a daemon installs SetErrorHandler to keep running. A
// misused untraced count is pegged far from zero (saturated), so that it is
// never freed twice nor wraps; the object leaks instead.
//
// The untraced path is one atomic add, no allocation and no lock.
//
// # Tracing
//
// Tracing is chosen per object at Init: for every class (TraceAll), for
// some (Trace), or from the environment variable DRVKIT_REFTRACE=all or
// DRVKIT_REFTRACE=ClassA,ClassB read at package initialization. A traced
// object records:
//
//   - the exact set of outstanding holders: per tag, the count and the
//     stacks of its unmatched retains (a release pairs with the most recent
//     retain of its tag);
//   - a bounded history of events (op, tag, stack, time; SetHistorySize,
//     default 64) with totals that count every event;
//   - after free, a freed record, so that a later retain or release names
//     the stack that freed it;
//   - the goroutine that created it, for refcount/leaktest.
//
// Stacks are interned in a stack depot keyed by a hash of their program
// counters: a million references taken at ten call sites store ten stacks.
// Symbolization waits until a report needs it.
//
// Tags must be comparable. A tag that is itself an Owner (any type
// embedding Object) is an ownership edge, owner → held.
//
// # Reports
//
// Over the live traced objects (or any chosen set, NewReport): Live counts
// per class; Leaks groups outstanding references by the call site of their
// retain; WhyAlive lists the chains of holders from a root (a holder that
// is not a live traced object) down to an object; Cycles finds groups of
// objects held only by each other. A Report is written as text
// (WriteText), JSON with stable keys (WriteJSON, schema_version) or a pprof
// profile (WriteProfile; `go tool pprof -top FILE`). TakeSnapshot and Diff
// compare two moments per class, per tag and per stack.
package refcount
