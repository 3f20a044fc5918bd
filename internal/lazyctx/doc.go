// Package lazyctx is a cancellable context that costs nothing until it is
// waited on.
//
// context.WithCancel registers the new context with its parent at once:
// two or three allocations and the parent's lock, and the same again to
// unregister — a twentieth of a call over the daemon's socket, paid by
// every call although most driver methods never wait on their context. A
// lazyctx.Context takes one allocation (none embedded in a struct that is
// made anyway) and follows its parent, with context.AfterFunc, only once
// Done is asked for. Err checks the parent directly. It implements the
// AfterFunc method the context package looks for, so contexts derived
// from it follow it without a goroutine each.
//
// context.Cause of a lazyctx.Context reports its parent's cause, not its
// own: drvkit cancels with context.Canceled only.
package lazyctx
