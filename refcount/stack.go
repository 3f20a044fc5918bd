package refcount

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
)

// Frame is one symbolized frame of a stack.
type Frame struct {
	Func string `json:"func"`
	File string `json:"file"`
	Line int    `json:"line"`
}

func (f Frame) String() string { return fmt.Sprintf("%s %s:%d", f.Func, f.File, f.Line) }

// Stack is a symbolized call stack, innermost frame first.
type Stack struct {
	Frames []Frame `json:"frames"`
}

// maxDepth bounds every recorded stack. Deep enough to reach from a Retain
// back through a driver callback into the registry, small enough that the
// capture buffer lives on the goroutine stack.
const maxDepth = 32

// captureStack records and symbolizes the caller's stack, skipping skip
// frames (0 is captureStack itself). Used only where a stack is reported at
// once (errors on untraced objects); traced objects intern stacks instead.
func captureStack(skip int) Stack {
	var pcs [maxDepth]uintptr
	n := runtime.Callers(skip+1, pcs[:])
	return symbolize(pcs[:n])
}

func symbolize(pcs []uintptr) Stack {
	var s Stack
	if len(pcs) == 0 {
		return s
	}
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if len(s.Frames) == 0 && more && isForwarder(f.Function) {
			continue
		}
		if f.Function != "" || f.File != "" {
			s.Frames = append(s.Frames, Frame{Func: f.Function, File: f.File, Line: f.Line})
		}
		if !more {
			break
		}
	}
	return s
}

// isForwarder reports whether fn is a TaggedRetain or TaggedRelease method
// of a type that keeps an Object in a field and forwards to it (as
// driver.Service does): a stack starts at its caller, the code that took
// or dropped the reference, as it does for a type that embeds Object.
// Trimmed when the stack is symbolized, so the traced path pays nothing.
func isForwarder(fn string) bool {
	return strings.HasSuffix(fn, ").TaggedRetain") || strings.HasSuffix(fn, ").TaggedRelease")
}

func (s Stack) String() string {
	var b strings.Builder
	s.writeIndented(&b, "")
	return b.String()
}

// Site is the innermost frame: the call site of the operation.
func (s Stack) Site() Frame {
	if len(s.Frames) == 0 {
		return Frame{Func: "?"}
	}
	return s.Frames[0]
}

func (s Stack) writeIndented(b *strings.Builder, indent string) {
	if len(s.Frames) == 0 {
		fmt.Fprintf(b, "%s(no stack recorded)\n", indent)
	}
	for _, f := range s.Frames {
		fmt.Fprintf(b, "%s%s %s:%d\n", indent, f.Func, f.File, f.Line)
	}
}

// stackID names an interned stack in the depot; 0 means no stack.
type stackID uint32

// The stack depot interns every stack recorded by traced objects: a stack
// is stored once, as its program counters, no matter how many references
// were taken there. Lookup of a known stack is lock-free (sync.Map keyed by
// the PC hash); only a new stack takes depotMu. Symbolization is lazy and
// cached, because only reports need it.
var (
	depotIndex sync.Map // uint64 hash -> *depotEntry (collisions chained)
	depotMu    sync.Mutex
	depotByID  atomic.Pointer[[]*depotEntry] // index id-1; copy on append
)

type depotEntry struct {
	id   stackID
	hash uint64
	pcs  []uintptr
	next *depotEntry // same hash, different PCs
	sym  atomic.Pointer[Stack]
}

func hashPCs(pcs []uintptr) uint64 {
	h := uint64(14695981039346656037)
	for _, pc := range pcs {
		h ^= uint64(pc)
		h *= 1099511628211
		h ^= h >> 29
	}
	return h
}

func equalPCs(a, b []uintptr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// internStack captures the caller's stack (skip as for runtime.Callers,
// counted from internStack's caller) and returns its depot id.
func internStack(skip int) stackID {
	var pcs [maxDepth]uintptr
	n := runtime.Callers(skip+2, pcs[:])
	return internPCs(pcs[:n])
}

func internPCs(pcs []uintptr) stackID {
	h := hashPCs(pcs)
	if v, ok := depotIndex.Load(h); ok {
		for e := v.(*depotEntry); e != nil; e = e.next {
			if equalPCs(e.pcs, pcs) {
				return e.id
			}
		}
	}
	depotMu.Lock()
	defer depotMu.Unlock()
	var head *depotEntry
	if v, ok := depotIndex.Load(h); ok {
		head = v.(*depotEntry)
		for e := head; e != nil; e = e.next {
			if equalPCs(e.pcs, pcs) {
				return e.id
			}
		}
	}
	var all []*depotEntry
	if p := depotByID.Load(); p != nil {
		all = *p
	}
	e := &depotEntry{id: stackID(len(all) + 1), hash: h, pcs: append([]uintptr(nil), pcs...), next: head}
	// Readers hold a slice header of the old length, so writing the slot
	// past it is invisible to them; a full slice is copied, never grown in
	// place.
	var grown []*depotEntry
	if len(all) < cap(all) {
		grown = append(all, e)
	} else {
		grown = make([]*depotEntry, len(all)+1, 2*len(all)+16)
		copy(grown, all)
		grown[len(all)] = e
	}
	depotByID.Store(&grown)
	depotIndex.Store(h, e)
	return e.id
}

func depotEntryOf(id stackID) *depotEntry {
	p := depotByID.Load()
	if id == 0 || p == nil || int(id) > len(*p) {
		return nil
	}
	return (*p)[id-1]
}

// stackOf symbolizes an interned stack (cached).
func stackOf(id stackID) Stack {
	e := depotEntryOf(id)
	if e == nil {
		return Stack{}
	}
	if s := e.sym.Load(); s != nil {
		return *s
	}
	s := symbolize(e.pcs)
	e.sym.Store(&s)
	return s
}

// DepotSize is the number of distinct stacks interned so far.
func DepotSize() int {
	if p := depotByID.Load(); p != nil {
		return len(*p)
	}
	return 0
}
