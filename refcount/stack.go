package refcount

import (
	"fmt"
	"runtime"
	"strings"
)

// Frame is one symbolized frame of a stack.
type Frame struct {
	Func string `json:"func"`
	File string `json:"file"`
	Line int    `json:"line"`
}

// Stack is a symbolized call stack, innermost frame first.
type Stack struct {
	Frames []Frame `json:"frames"`
}

const maxDepth = 32

// captureStack records the caller's stack, skipping skip frames (0 is
// captureStack itself).
func captureStack(skip int) Stack {
	var pcs [maxDepth]uintptr
	n := runtime.Callers(skip+1, pcs[:])
	return symbolize(pcs[:n])
}

func symbolize(pcs []uintptr) Stack {
	var s Stack
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		s.Frames = append(s.Frames, Frame{Func: f.Function, File: f.File, Line: f.Line})
		if !more {
			break
		}
	}
	return s
}

func (s Stack) String() string {
	var b strings.Builder
	s.writeIndented(&b, "")
	return b.String()
}

func (s Stack) writeIndented(b *strings.Builder, indent string) {
	for _, f := range s.Frames {
		fmt.Fprintf(b, "%s%s %s:%d\n", indent, f.Func, f.File, f.Line)
	}
}
