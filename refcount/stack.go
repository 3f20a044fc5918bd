package refcount

import (
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/debug"
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

// Blame is the frame a report names first: the innermost frame that is
// not framework code (IsFramework, or what SetFramework installed) — the
// line in the program that led drvkit to take the reference. A stack made
// only of framework code is blamed on its innermost frame.
func (s Stack) Blame() Frame {
	isFw := frameworkFunc()
	for _, f := range s.Frames {
		if !isFw(f) {
			return f
		}
	}
	return s.Site()
}

// Short is the frame as a report's first line shows it: the function
// qualified by its package name only, and the file's base name
// ("yourpkg.keepProvider file.go:43").
func (f Frame) Short() string {
	fn := f.Func
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		fn = fn[i+1:]
	}
	file := f.File
	if i := strings.LastIndexByte(file, '/'); i >= 0 {
		file = file[i+1:]
	}
	return fmt.Sprintf("%s %s:%d", fn, file, f.Line)
}

// Module is drvkit's module path: IsFramework treats its packages as
// framework code, except tests and examples.
const Module = "github.com/drvkit/drvkit"

var framework atomic.Pointer[func(Frame) bool]

// SetFramework replaces the rule that says which frames are framework code,
// skipped when a report names the frame to blame (Stack.Blame), and returns
// the previous rule; nil restores IsFramework. A program that wraps drvkit
// in a library of its own can add that library:
//
//	refcount.SetFramework(func(f refcount.Frame) bool {
//		return refcount.IsFramework(f) || strings.HasPrefix(f.Func, "example.com/ourkit/")
//	})
func SetFramework(isFramework func(Frame) bool) (previous func(Frame) bool) {
	var p *func(Frame) bool
	if isFramework != nil {
		p = &isFramework
	}
	if old := framework.Swap(p); old != nil {
		return *old
	}
	return IsFramework
}

func frameworkFunc() func(Frame) bool {
	if p := framework.Load(); p != nil {
		return *p
	}
	return IsFramework
}

// IsFramework is the default rule: a frame is framework code when its
// function belongs to drvkit's module (Module) or to the Go standard
// library (and the runtime). drvkit's own tests, examples and testdata
// programs are not framework code: a frame in a _test.go file, in a
// package whose name ends in _test, or under examples/ or testdata/ is the
// user's.
func IsFramework(f Frame) bool {
	if strings.HasSuffix(f.File, "_test.go") {
		return false
	}
	pkg := funcPackage(f.Func)
	if pkg == "" {
		return false
	}
	if strings.HasSuffix(pkg, "_test") {
		return false
	}
	if pkg == Module || strings.HasPrefix(pkg, Module+"/") {
		rest := strings.TrimPrefix(pkg, Module)
		return !strings.HasPrefix(rest, "/examples") && !strings.Contains(rest+"/", "/testdata/")
	}
	return isStdPackage(pkg, f.File)
}

// funcPackage is the import path of a symbolized function name
// ("github.com/x/y.(*T).m" → "github.com/x/y").
func funcPackage(fn string) string {
	slash := strings.LastIndexByte(fn, '/')
	dot := strings.IndexByte(fn[slash+1:], '.')
	if dot < 0 {
		return ""
	}
	return fn[:slash+1+dot]
}

// goroot is where the standard library's files were when this binary was
// built, which is what its frames' file names say.
//
//lint:ignore SA1019 the build's GOROOT is the one wanted here (frame file names), not the go command's
var goroot = strings.TrimSuffix(filepath.ToSlash(runtime.GOROOT()), "/")

// isStdPackage: the standard library's import paths have no dot in their
// first element. A main module may be named so too ("myapp"), so when the
// frame's file is known the file must also lie in GOROOT (or, built with
// -trimpath, be a relative path under the import path).
func isStdPackage(pkg, file string) bool {
	first, _, _ := strings.Cut(pkg, "/")
	if strings.Contains(first, ".") || inBuildModules(pkg) {
		return false
	}
	if file == "" || strings.HasPrefix(file, "<autogenerated>") {
		return true
	}
	file = filepath.ToSlash(file)
	if goroot != "" && strings.HasPrefix(file, goroot+"/src/") {
		return true
	}
	if !strings.HasPrefix(file, "/") && !(len(file) > 1 && file[1] == ':') {
		return strings.HasPrefix(file, pkg+"/") // -trimpath: "runtime/proc.go"
	}
	return false
}

// buildModules are the module paths of the running binary (main module and
// dependencies), from its build information: a package in one of them is
// not the standard library, whatever its name looks like.
var buildModules = sync.OnceValue(func() []string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	var out []string
	if bi.Main.Path != "" {
		out = append(out, bi.Main.Path)
	}
	for _, d := range bi.Deps {
		out = append(out, d.Path)
	}
	return out
})

func inBuildModules(pkg string) bool {
	for _, m := range buildModules() {
		if pkg == m || strings.HasPrefix(pkg, m+"/") {
			return true
		}
	}
	return false
}
