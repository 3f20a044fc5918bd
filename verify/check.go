package verify

import (
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/lifecyclecheck"
	"github.com/drvkit/drvkit/refcount"
)

// Problem is one thing a run got wrong.
type Problem struct {
	// Kind: "leak" (objects), "goroutine", "fd", "process", "trace" (the
	// lifecycle invariants), "job-free", "use-after-free", "contract"
	// (a callback after Stop…), "panic" (the driver's own), "notify"
	// (an application told the wrong cause, or nothing), "device"
	// (handles left open), "blockers", "setup", "watchdog".
	Kind string `json:"kind"`
	Text string `json:"text"`
	// Culprit is the first frame outside drvkit responsible, when known.
	Culprit *refcount.Frame `json:"culprit,omitempty"`
	Stack   *refcount.Stack `json:"stack,omitempty"`
}

func (p Problem) String() string {
	s := p.Kind + ": " + p.Text
	if p.Culprit != nil {
		s = fmt.Sprintf("%s\n  culprit: %s (%s:%d)", s, p.Culprit.Func, p.Culprit.File, p.Culprit.Line)
	}
	return s
}

// stackNow is the caller's stack, for a problem seen as it happens.
func stackNow() *refcount.Stack {
	pcs := make([]uintptr, 48)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var st refcount.Stack
	for {
		f, more := frames.Next()
		st.Frames = append(st.Frames, refcount.Frame{Func: f.Function, File: f.File, Line: f.Line})
		if !more {
			break
		}
	}
	return &st
}

// userFrame is the first frame of st outside drvkit and the standard
// library (refcount's rule: examples, tests and testdata are the user's),
// or nil if every frame is framework code.
func userFrame(st refcount.Stack) *refcount.Frame {
	for _, f := range st.Frames {
		// "panic" is how a stack prints runtime.gopanic: no package,
		// the runtime's frame, not the user's.
		if !refcount.IsFramework(f) && strings.Contains(f.Func, ".") {
			f := f
			return &f
		}
	}
	return nil
}

// parseStack reads one goroutine's stack as runtime.Stack and
// debug.Stack print it; "created by" lines end it (createdBy returns
// that frame).
func parseStack(text string) (st refcount.Stack, createdBy *refcount.Frame) {
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" || strings.HasPrefix(l, "goroutine ") || strings.HasPrefix(l, "\t") {
			continue
		}
		fn := l
		created := false
		if rest, ok := strings.CutPrefix(l, "created by "); ok {
			fn, created = rest, true
			if j := strings.Index(fn, " in goroutine "); j >= 0 {
				fn = fn[:j]
			}
		} else if j := strings.LastIndexByte(fn, '('); j > 0 {
			fn = fn[:j]
		}
		var fr refcount.Frame
		fr.Func = fn
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "\t") {
			loc := strings.TrimSpace(lines[i+1])
			if j := strings.LastIndex(loc, " +0x"); j >= 0 {
				loc = loc[:j]
			}
			if j := strings.LastIndexByte(loc, ':'); j >= 0 {
				fr.File = loc[:j]
				fr.Line, _ = strconv.Atoi(loc[j+1:])
			}
			i++
		}
		if created {
			createdBy = &fr
			continue
		}
		st.Frames = append(st.Frames, fr)
	}
	return st, createdBy
}

// goroutines returns the stacks of all goroutines by ID.
func goroutines() map[int]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[int]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		rest, ok := strings.CutPrefix(g, "goroutine ")
		if !ok {
			continue
		}
		id, _, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(id)
		if err == nil {
			out[n] = g
		}
	}
	return out
}

// baseline is what the process had before a run.
type baseline struct {
	objects    map[uint64]bool
	goroutines map[int]string
	fds        map[string]string
	children   map[int]bool
}

func takeBaseline() baseline {
	b := baseline{objects: map[uint64]bool{}, goroutines: goroutines(), fds: openFDs(), children: childPIDs()}
	for _, o := range refcount.LiveObjects() {
		b.objects[o.ID()] = true
	}
	return b
}

// check is the end-of-run verification.
func (r *Trial) check(before baseline, settle time.Duration) []Problem {
	var ps []Problem
	r.evMu.Lock()
	evs := append([]driver.LifecycleEvent(nil), r.events...)
	r.evMu.Unlock()
	if err := lifecyclecheck.Validate(evs, true); err != nil {
		ps = append(ps, Problem{Kind: "trace", Text: err.Error()})
	}
	r.omu.Lock()
	ps = append(ps, r.problems...)
	for _, p := range r.panics {
		st, _ := parseStack(p.stack)
		pr := Problem{Kind: "panic", Text: p.msg, Culprit: userFrame(st)}
		if len(st.Frames) > 0 {
			pr.Stack = &st
		}
		ps = append(ps, pr)
	}
	var jobIDs []uint64
	for id := range r.jobs {
		jobIDs = append(jobIDs, id)
	}
	sort.Slice(jobIDs, func(i, j int) bool { return jobIDs[i] < jobIDs[j] })
	for _, id := range jobIDs {
		if n := r.jobs[id]; n != 1 {
			ps = append(ps, Problem{Kind: "job-free", Text: fmt.Sprintf("%s (job %d): Free ran %d times, want exactly once", r.jobOf[id], id, n)})
		}
	}
	r.omu.Unlock()
	for i := range ps {
		if ps[i].Culprit == nil && ps[i].Stack != nil {
			ps[i].Culprit = userFrame(*ps[i].Stack)
		}
	}
	for _, t := range r.dev.Check() {
		ps = append(ps, Problem{Kind: "device", Text: t})
	}
	ps = append(ps, r.checkNotices(evs)...)
	if r.opts.Check != nil {
		ps = append(ps, r.opts.Check(r)...)
	}
	_ = r.dev.Close()
	ps = append(ps, leaks(before, settle)...)
	return ps
}

// checkNotices: every embedded application that outlived its driver heard
// ServiceIsTerminated, with the cause and root cause of the trace's
// terminate; what a process heard names a cause the trace has.
func (r *Trial) checkNotices(evs []driver.LifecycleEvent) []Problem {
	term := map[uint64]string{}
	causes := map[string]bool{}
	for _, e := range evs {
		if e.Step == driver.StepTerminate {
			c := e.Cause.Text() + " " + e.RootCause.Text()
			term[e.ServiceID] = c
			causes[c] = true
		}
	}
	var ps []Problem
	r.amu.Lock()
	defer r.amu.Unlock()
	for _, as := range r.apps {
		for _, a := range as {
			heard := a.heard()
			switch a := a.(type) {
			case *embedded:
				want, ok := term[a.prov.ID()]
				if !ok || !a.alive() {
					continue
				}
				n := 0
				for _, h := range heard {
					typ, c, _ := strings.Cut(h, " ")
					if typ != driver.ServiceIsTerminated.String() {
						continue
					}
					n++
					if c != want {
						ps = append(ps, Problem{Kind: "notify", Text: fmt.Sprintf("%s heard ServiceIsTerminated with cause %q, the trace says %q", a.label, c, want)})
					}
				}
				if n != 1 {
					ps = append(ps, Problem{Kind: "notify", Text: fmt.Sprintf("%s heard ServiceIsTerminated %d times, want once (heard %q)", a.label, n, heard)})
				}
			case *process:
				for _, h := range heard {
					typ, c, _ := strings.Cut(h, " ")
					if typ != driver.ServiceIsTerminated.String() && typ != driver.ServiceIsRequestingClose.String() {
						continue
					}
					if !causes[c] {
						ps = append(ps, Problem{Kind: "notify", Text: fmt.Sprintf("%s heard %q: no termination had that cause", a.label, h)})
					}
				}
			}
		}
	}
	return ps
}

// leaks waits up to settle for what the run made to go, then reports what
// stayed: objects (with the refcount report), goroutines, file
// descriptors and child processes, each with its culprit.
func leaks(before baseline, settle time.Duration) []Problem {
	deadline := time.Now().Add(settle)
	for {
		objs, gs, fds, kids := leftovers(before)
		if (len(objs) == 0 && len(gs) == 0 && len(fds) == 0 && len(kids) == 0) || time.Now().After(deadline) {
			return leakProblems(objs, gs, fds, kids)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func leftovers(before baseline) (objs []*refcount.Object, gs map[int]string, fds map[string]string, kids []int) {
	for _, o := range refcount.LiveObjects() {
		if !before.objects[o.ID()] {
			objs = append(objs, o)
		}
	}
	gs = map[int]string{}
	for id, g := range goroutines() {
		if _, ok := before.goroutines[id]; !ok && !ignorable(g) {
			gs[id] = g
		}
	}
	fds = map[string]string{}
	for fd, target := range openFDs() {
		// The runtime's netpoller (epoll and its eventfd) is made once, by
		// whichever run first waits on a descriptor.
		if before.fds[fd] != target && !strings.HasPrefix(target, "anon_inode:[eventpoll]") && !strings.HasPrefix(target, "anon_inode:[eventfd]") {
			fds[fd] = target
		}
	}
	for pid := range childPIDs() {
		if !before.children[pid] {
			kids = append(kids, pid)
		}
	}
	sort.Ints(kids)
	return
}

// ignorable: goroutines of the runtime and the test framework that come
// and go on their own.
func ignorable(g string) bool {
	for _, s := range []string{"runtime.gc", "runtime.bgsweep", "runtime.bgscavenge", "runtime.forcegchelper",
		"runtime.runfinq", "testing.(*T).Run", "testing.runTests", "testing.(*M).startAlarm", "os/signal.signal_recv",
		"runtime.ensureSigM", "runtime/trace", "testing.tRunner.func1"} {
		if strings.Contains(g, s+"(") || strings.Contains(g, s+"\n") {
			return true
		}
	}
	return false
}

func leakProblems(objs []*refcount.Object, gs map[int]string, fds map[string]string, kids []int) []Problem {
	var ps []Problem
	if len(objs) > 0 {
		rep := refcount.NewReport(objs)
		var b strings.Builder
		_ = rep.WriteText(&b)
		p := Problem{Kind: "leak", Text: fmt.Sprintf("%d object(s) outlive the run:\n%s", len(objs), b.String())}
		for _, g := range rep.Leaks {
			if !refcount.IsFramework(g.Site) && g.Site.Func != "" {
				site := g.Site
				p.Culprit = &site
				if len(g.Stacks) > 0 {
					st := g.Stacks[0].Stack
					p.Stack = &st
				}
				break
			}
		}
		ps = append(ps, p)
	}
	if len(gs) > 0 {
		ids := make([]int, 0, len(gs))
		for id := range gs {
			ids = append(ids, id)
		}
		sort.Ints(ids)
		var texts []string
		p := Problem{Kind: "goroutine"}
		for _, id := range ids {
			texts = append(texts, gs[id])
			st, created := parseStack(gs[id])
			if p.Culprit == nil {
				p.Culprit = userFrame(st)
				if p.Culprit == nil && created != nil && !refcount.IsFramework(*created) {
					p.Culprit = created
				}
				if p.Culprit != nil {
					p.Stack = &st
				}
			}
		}
		p.Text = fmt.Sprintf("%d goroutine(s) outlive the run:\n%s", len(gs), strings.Join(texts, "\n\n"))
		ps = append(ps, p)
	}
	if len(fds) > 0 {
		var names []string
		for fd, t := range fds {
			names = append(names, fd+" → "+t)
		}
		sort.Strings(names)
		ps = append(ps, Problem{Kind: "fd", Text: fmt.Sprintf("%d file descriptor(s) left open: %s", len(fds), strings.Join(names, ", "))})
	}
	if len(kids) > 0 {
		ps = append(ps, Problem{Kind: "process", Text: fmt.Sprintf("%d child process(es) left running: pids %v", len(kids), kids)})
	}
	return ps
}
