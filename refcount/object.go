package refcount

import (
	"fmt"
	"math"
	"sync/atomic"
)

// saturated is where a count is pegged once it overflows or is misused: far
// from both zero and the wrap point, so that neither a later release nor a
// later retain can reach a free or wrap (the kernel's refcount_t does the same).
const saturated = math.MaxInt32 / 2

// tracedBias is where refs of a traced object stays (give or take the
// operations in flight): far below zero, so every fast-path add is out of
// range.
const tracedBias = math.MinInt32 / 2

var nextID atomic.Uint64

// Object is the reference count embedded in every managed object.
//
// The zero value is not usable: call Init before the object is shared. The
// count starts at 1, the creator's reference, and free runs exactly once,
// when the count reaches zero.
type Object struct {
	refs  atomic.Int32
	id    uint64
	class string
	free  func()
	// tr is set by Init, before the object is published, and never changes:
	// whether an object is traced is decided once, at birth, so that the
	// set of holders of a traced object is exact.
	tr *tracked
}

// Owner is implemented by any tag that is itself a counted object. A
// reference tagged with an Owner is an ownership edge owner → held, which
// WhyAlive and Cycles follow. Every type embedding Object is an Owner.
type Owner interface {
	RefObject() *Object
}

var _ Owner = (*Object)(nil)

// Init gives the object its class name and free function and sets the count
// to 1. free may be nil.
func (o *Object) Init(class string, free func()) {
	o.id = nextID.Add(1)
	o.class = class
	o.free = free
	o.refs.Store(1)
	o.tr = nil
	if tracingEnabled(class) {
		// A traced object keeps its count in tr, under tr.mu; refs sits at
		// tracedBias so that the fast path's add always lands out of range
		// and takes the slow path, which undoes it.
		o.refs.Store(tracedBias)
		o.tr = newTracked(o, internStack(1))
		register(o)
	}
}

// ID is unique per object for the life of the process.
func (o *Object) ID() uint64 { return o.id }

// Class is the class name given to Init.
func (o *Object) Class() string { return o.class }

// RefObject returns o; it makes every type that embeds Object an Owner.
func (o *Object) RefObject() *Object { return o }

// Traced reports whether o records its history and holders.
func (o *Object) Traced() bool { return o.tr != nil }

// RetainCount is the current count. It is a snapshot: only the holder of a
// reference may rely on it staying above zero.
func (o *Object) RetainCount() int {
	if o.tr != nil {
		return int(o.tr.count.Load())
	}
	return int(o.refs.Load())
}

// The four operations below are small enough to be inlined: the untraced
// path is one atomic add and one unsigned range check; everything else
// (tracing, misuse) is in the out-of-line slow functions.

// Retain takes an untagged reference.
func (o *Object) Retain() {
	if n := o.refs.Add(1); uint32(n-2) >= saturated-2 { // outside 2 ≤ n < saturated
		o.retainSlow(nil, n)
	}
}

// Release drops an untagged reference.
func (o *Object) Release() {
	if n := o.refs.Add(-1); uint32(n-1) >= saturated-2 { // outside 1 ≤ n < saturated-1
		o.releaseSlow(nil, n)
	}
}

// TaggedRetain takes a reference on behalf of tag. tag must be comparable;
// an Owner tag records an ownership edge. A traced object requires every
// release to name a tag that holds a reference (an untagged Release pairs
// with an untagged Retain or the creator's reference), as WDF enforces;
// untraced objects ignore tags.
//
// On hot paths use a pointer or a zero-size value as the tag (the owner,
// a *T, a struct{} type): those convert to any without allocating. Any
// other value — an int, a string, a struct with fields — is boxed on the
// heap by the conversion at the call site, before TaggedRetain runs, even
// when the object is untraced (BenchmarkTaggedUntraced).
func (o *Object) TaggedRetain(tag any) {
	if n := o.refs.Add(1); uint32(n-2) >= saturated-2 { // outside 2 ≤ n < saturated
		o.retainSlow(tag, n)
	}
}

// TaggedRelease drops a reference taken by TaggedRetain with the same tag.
func (o *Object) TaggedRelease(tag any) {
	if n := o.refs.Add(-1); uint32(n-1) >= saturated-2 { // outside 1 ≤ n < saturated-1
		o.releaseSlow(tag, n)
	}
}

// retainSlow is a traced retain, or an untraced one whose add produced n
// out of range.
func (o *Object) retainSlow(tag any, n int32) {
	if o.tr != nil {
		o.refs.Add(-1) // undo the fast path's add: traced counts live in tr
		o.tr.retain(tag)
		return
	}
	o.untracedFault(n, true)
}

func (o *Object) releaseSlow(tag any, n int32) {
	switch {
	case o.tr != nil:
		o.refs.Add(1)
		o.tr.release(tag)
	case n == 0:
		o.runFree()
	default:
		o.untracedFault(n, false)
	}
}

func (o *Object) runFree() {
	if o.free != nil {
		o.free()
	}
}

// untracedFault handles misuse seen on the untraced path: the count is
// pegged so nothing is freed twice, and the error is reported without
// stacks other than the offending call's.
func (o *Object) untracedFault(n int32, retain bool) {
	o.refs.Store(saturated)
	if n == saturated+1 || n == saturated-1 {
		return // already pegged and reported: stays pegged, quietly
	}
	var kind ErrorKind
	switch {
	case n >= saturated:
		kind = ErrSaturated
	case retain:
		kind = ErrResurrected
	default:
		kind = ErrOverRelease
	}
	report(&Error{Kind: kind, ID: o.id, Class: o.class, Offender: captureStack(4)})
}

func (o *Object) String() string { return fmt.Sprintf("%s#%d", o.class, o.id) }
