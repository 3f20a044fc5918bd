package refcount

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// ErrorKind says which rule a reference operation broke. The kinds are
// errors themselves, so that errors.Is(err, refcount.ErrOverRelease) matches
// an *Error of that kind.
type ErrorKind int

var _ error = ErrOverRelease

const (
	ErrOverRelease ErrorKind = iota + 1 // release below zero
	ErrResurrected                      // retain after free
	ErrTagMismatch                      // TaggedRelease with a tag that holds nothing
	ErrSaturated                        // the count overflowed and is pegged
)

func (k ErrorKind) String() string {
	switch k {
	case ErrOverRelease:
		return "release below zero"
	case ErrResurrected:
		return "retain after free"
	case ErrTagMismatch:
		return "release with a tag that holds no reference"
	case ErrSaturated:
		return "reference count saturated"
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

func (k ErrorKind) Error() string { return k.String() }

// Error reports a broken reference rule with both stacks involved: where the
// offending call came from, and the retain or free it conflicts with.
type Error struct {
	Kind  ErrorKind
	ID    uint64
	Class string
	Tag   string // formatted tag; empty for an untagged call
	// Offender is the stack of the bad call.
	Offender Stack
	// Conflict is the stack it conflicts with: the free for a resurrection
	// or an over-release, the last retain for a saturation, the most recent
	// release of that tag for a tag mismatch. Empty when the object is not
	// traced.
	Conflict     Stack
	ConflictWhat string // "freed", "last retained", …
	// Holders are the object's outstanding holders when the error happened
	// (traced objects only).
	Holders []Holding
}

// Is reports whether target is e's kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(ErrorKind)
	return ok && k == e.Kind
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s#%d", e.Kind.String(), e.Class, e.ID)
	if e.Tag != "" {
		fmt.Fprintf(&b, " tag %s", e.Tag)
	}
	fmt.Fprintf(&b, "\n  offending call at %s:\n", e.Offender.Blame().Short())
	e.Offender.writeIndented(&b, "    ")
	if len(e.Conflict.Frames) > 0 {
		fmt.Fprintf(&b, "  %s at %s:\n", e.ConflictWhat, e.Conflict.Blame().Short())
		e.Conflict.writeIndented(&b, "    ")
	} else if e.ConflictWhat != "" {
		fmt.Fprintf(&b, "  %s: no stack recorded\n", e.ConflictWhat)
	}
	if len(e.Holders) > 0 {
		b.WriteString("  outstanding holders:\n")
		for _, h := range e.Holders {
			writeHolding(&b, h, "    ")
		}
	}
	return b.String()
}

var handler atomic.Pointer[func(*Error)]

// SetErrorHandler installs h to receive every reference error instead of
// the default panic, so that a daemon keeps running; nil restores the
// panic. It returns the previous handler.
func SetErrorHandler(h func(*Error)) (previous func(*Error)) {
	var p *func(*Error)
	if h != nil {
		p = &h
	}
	if old := handler.Swap(p); old != nil {
		return *old
	}
	return nil
}

func report(e *Error) {
	if h := handler.Load(); h != nil {
		(*h)(e)
		return
	}
	panic(e)
}
