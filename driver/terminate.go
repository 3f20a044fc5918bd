package driver

// The lifecycle, all in one place: Terminate (phase 1, on the caller), the
// termination worker (phases 2 and 3), TerminateSync, Unload and Close.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/internal/faultinject"
)

// termPhase is where a batch — the services one Terminate made inactive —
// is in the termination contract of DESIGN.md. A batch goes through the
// phases in order, each once; the worker parks a batch in the middle of a
// phase and resumes it there.
type termPhase uint8

const (
	// phase1Marked: the caller of Terminate marks the services inactive,
	// cascades to clients and sends ServiceIsTerminated. The batch is
	// handed to the worker at its end.
	phase1Marked termPhase = iota
	// phase2Will: WillTerminate root to leaf, then ServiceIsRequestingClose
	// to every client holding a service of the batch open.
	phase2Will
	// phase2Did: leaf to root, wait until nobody has the service open, then
	// DidTerminate.
	phase2Did
	// phase3Finish: leaf first, each service through its finishSteps:
	// stop → detach → the registry's reference dropped (→ free).
	phase3Finish
	// phaseDone: every service of the batch finished; the worker drops it.
	phaseDone
)

func (p termPhase) String() string {
	switch p {
	case phase1Marked:
		return "phase 1: marked inactive"
	case phase2Will:
		return "phase 2: willTerminate"
	case phase2Did:
		return "phase 2: didTerminate"
	case phase3Finish:
		return "phase 3: stop, detach, free"
	case phaseDone:
		return "done"
	}
	return fmt.Sprintf("termPhase(%d)", uint8(p))
}

// finishStep is one service's progress through phase 3 (Registry.finish).
type finishStep uint8

const (
	// finishCancel: cancel queued jobs and the running jobs' context,
	// refuse new client calls.
	finishCancel finishStep = iota
	// finishDrain: wait for running jobs and client calls to return.
	finishDrain
	// finishDetachClients: leaves go first — wait for clients terminating
	// in another batch, detach the clients that survive.
	finishDetachClients
	// finishStop: once the service's handler got the termination messages
	// queued for it, Stop, under the callback lock.
	finishStop
	// finishDetach: release managed resources, detach from every provider,
	// drop the registry's reference.
	finishDetach
	// finishDone: finished; the service is freed when its last reference goes.
	finishDone
)

func (f finishStep) String() string {
	switch f {
	case finishCancel:
		return "cancel jobs"
	case finishDrain:
		return "drain jobs and calls"
	case finishDetachClients:
		return "detach clients"
	case finishStop:
		return "stop"
	case finishDetach:
		return "release resources and detach"
	case finishDone:
		return "done"
	}
	return fmt.Sprintf("finishStep(%d)", uint8(f))
}

// termState is a terminated service's progress through phases 2 and 3.
type termState struct {
	b       *batch
	via     *Service   // the provider whose termination cascaded to it; nil for the batch's first
	step    finishStep // where it is in phase 3
	waiting string     // why the worker parked on it, for reports
	waitFor *Service   // the client it waits for, if that is why
}

// causes is x's cause and the root cause of its termination (see Cause).
func (t *termState) causes() (cause, root Cause) {
	if t.via == nil {
		return t.b.cause, t.b.cause
	}
	return CauseProviderTerminated, t.b.cause
}

// batch is the set of services one Terminate made inactive, root to leaf.
type batch struct {
	svcs  []*Service
	phase termPhase
	idx   int
	cause Cause // why the first service was terminated: the root cause of all
	// What phase 1 saw, so that phase 2 skips walks that would do nothing
	// (each costs a cache miss per service in a large registry): whether
	// any service has a WillTerminate or DidTerminate hook, and whether any
	// is open (no Open succeeds on an inactive service, so none becomes so).
	anyWill, anyDid, anyOpen bool
	// left counts the services not yet freed; done is closed when none
	// is left, so that TerminateSync waits for a whole cascade at once.
	left atomic.Int64
	done chan struct{}
}

func (b *batch) freedOne() {
	if b.left.Add(-1) == 0 {
		close(b.done)
	}
}

// Terminate starts the termination of s and returns at once. Phase 1 runs
// here: s and every client whose only active provider it was become
// inactive (their Context is cancelled, Open on them fails, matching stops),
// their clients and interest listeners are sent ServiceIsTerminated, and
// the set is handed to the termination worker. A second Terminate is a
// no-op. The cause is CauseUnknown: use TerminateWith when you know why.
func (s *Service) Terminate() { s.reg.terminate(s, CauseUnknown) }

// TerminateWith is Terminate saying why: the messages and lifecycle events
// of s carry cause, those of the services the termination cascades to carry
// CauseProviderTerminated with cause as their root cause. A second
// termination is a no-op and keeps the first cause.
func (s *Service) TerminateWith(cause Cause) { s.reg.terminate(s, cause) }

// TerminationCause returns why s was terminated and the root cause of its
// termination (see Cause); CauseUnknown twice while s is active.
func (s *Service) TerminationCause() (cause, root Cause) {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	if s.term == nil {
		return CauseUnknown, CauseUnknown
	}
	return s.term.causes()
}

func (r *Registry) terminate(s *Service, cause Cause) bool {
	r.mu.Lock()
	if !s.active {
		r.mu.Unlock()
		return false
	}
	b := &batch{done: make(chan struct{}), cause: cause}
	w := &phase1{r: r, b: b}
	w.reach(s, nil)
	for i := 0; i < len(w.list); i++ {
		x := w.list[i] // not touched again unless announced in its turn
		if len(w.later) > 0 && w.later[0] == i {
			w.later = w.later[1:]
			w.announce(x)
		}
		// list[0] is s; every other service was reached by the cascade.
		xc := cause
		if i > 0 {
			xc = CauseProviderTerminated
		}
		for _, c := range w.clientsOf(i) {
			if c.enqueue(delivery{m: Message{Type: ServiceIsTerminated, From: w.ids[i], Cause: xc, RootCause: cause}, toDriver: true, from: x}) {
				w.wake = append(w.wake, c)
			}
			if !c.active || c.hasOtherActiveProvider(x) {
				continue
			}
			w.reach(c, x)
		}
	}
	list := w.list
	b.svcs = list
	b.left.Store(int64(len(list)))
	b.phase = phase2Will
	r.mu.Unlock()
	r.mail.schedule(w.wake...)
	for _, c := range w.cancels {
		c()
	}
	r.wmu.Lock()
	r.batches = append(r.batches, b)
	r.wmu.Unlock()
	r.kick()
	return true
}

// phase1 is one phase 1 walk (r.mu held). It goes breadth first, the
// order of the batch that terminate events and phases 2 and 3 follow, but
// touches each service once, when it is reached: in a registry larger than
// the CPU caches every touch is a cache miss, and breadth first would come
// back to each service long after it left the cache. What the walk needs
// of a service later, its clients, is copied when it is reached.
type phase1 struct {
	r       *Registry
	b       *batch
	list    []*Service
	ids     []uint64   // the ID of list[i]
	kids    []*Service // the clients of list[i], by ID: kids[ends[i-1]:ends[i]]
	ends    []int32
	later   []int // indexes in list of services announced in their turn
	wake    []*Service
	cancels []context.CancelFunc // contexts to cancel outside the lock
}

// reach makes x inactive and part of the batch; via is the provider whose
// termination cascaded to it (nil for the first).
func (w *phase1) reach(x, via *Service) {
	x.active = false
	x.ts = termState{b: w.b, via: via}
	x.term = &x.ts
	w.r.emitTerminate(x)
	w.list = append(w.list, x)
	w.ids = append(w.ids, x.ID())
	w.kids = appendByID(w.kids, x.clients)
	w.ends = append(w.ends, int32(len(w.kids)))
	w.b.noteHooks(x)
	if len(x.providers) > 1 {
		// Its other providers in the batch still message it in this walk:
		// its own ServiceIsTerminated keeps its place after theirs.
		w.later = append(w.later, len(w.list)-1)
		return
	}
	w.announce(x)
}

// clientsOf returns the clients of list[i] as they were when it was reached.
func (w *phase1) clientsOf(i int) []*Service {
	start := int32(0)
	if i > 0 {
		start = w.ends[i-1]
	}
	return w.kids[start:w.ends[i]]
}

// announce sends ServiceIsTerminated to x's interest listeners and marks
// its Context done.
func (w *phase1) announce(x *Service) {
	cause, root := x.term.causes()
	if x.enqueue(delivery{m: Message{Type: ServiceIsTerminated, From: x.ID(), Cause: cause, RootCause: root}}) {
		w.wake = append(w.wake, x)
	}
	if c := x.contextDone(); c != nil {
		w.cancels = append(w.cancels, c)
	}
}

// noteHooks records what phase 2 has to do for x; r.mu is held.
func (b *batch) noteHooks(x *Service) {
	if _, ok := x.impl.(WillTerminater); ok {
		b.anyWill = true
	}
	if _, ok := x.impl.(DidTerminater); ok {
		b.anyDid = true
	}
	if len(x.openers) > 0 {
		b.anyOpen = true
	}
}

func (s *Service) hasOtherActiveProvider(p *Service) bool {
	for _, x := range s.providers {
		if x != p && x.active {
			return true
		}
	}
	return false
}

// worker is the registry's one termination worker. It never blocks on
// driver code it does not run itself: a branch that must wait (busy
// callbacks, open clients, running jobs, clients terminating elsewhere) is
// parked and retried when kicked.
func (r *Registry) worker() {
	defer close(r.wdone)
	for {
		r.runBatches()
		if r.closing.Load() && r.idle() {
			return
		}
		<-r.kickc
	}
}

// idle reports whether every service is freed and no batch is pending: a
// closing registry's worker may exit.
func (r *Registry) idle() bool {
	r.wmu.Lock()
	n := len(r.batches)
	r.wmu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == 0 && r.live.n == 0 && r.inFlight == 0 {
		r.workerGone = true // from now on services are born freed
		return true
	}
	return false
}

func (r *Registry) runBatches() {
	for {
		r.wmu.Lock()
		bs := append([]*batch(nil), r.batches...)
		r.wmu.Unlock()
		progress, finished := false, false
		for _, b := range bs {
			p := r.advance(b)
			progress = progress || p
			finished = finished || b.phase == phaseDone
		}
		if finished {
			r.wmu.Lock()
			kept := r.batches[:0]
			for _, b := range r.batches {
				if b.phase != phaseDone {
					kept = append(kept, b)
				}
			}
			for i := len(kept); i < len(r.batches); i++ {
				r.batches[i] = nil
			}
			r.batches = kept
			r.wmu.Unlock()
		}
		if !progress {
			return
		}
	}
}

// advance moves b as far as it can go and reports whether anything moved.
func (r *Registry) advance(b *batch) (progress bool) {
	for {
		switch b.phase {
		case phase2Will: // root to leaf
			if !b.anyWill && !r.ev.subscribed() {
				b.idx = len(b.svcs) // nothing to call, nobody to tell
			}
			for b.idx < len(b.svcs) {
				x := b.svcs[b.idx]
				if w, ok := x.impl.(WillTerminater); ok {
					// Even a driver not started yet is waited for: its Start
					// may be running, and decides.
					ran, _ := x.tryCallback("WillTerminate", func() error {
						_ = faultinject.At(faultinject.WillTerminate, x)
						if x.wasStarted() {
							w.WillTerminate(x)
						}
						return nil
					})
					if !ran {
						x.setWaiting("worker waits for the running callback")
						return progress
					}
				}
				r.emit(x, StepWillTerminate, nil, 0, nil)
				b.idx++
				progress = true
			}
			if b.anyOpen {
				r.mu.Lock()
				for _, x := range b.svcs {
					cause, root := x.term.causes()
					for _, c := range x.sortedOpenersLocked() {
						c.post(delivery{m: Message{Type: ServiceIsRequestingClose, From: x.ID(), Cause: cause, RootCause: root}, toDriver: true, from: x})
					}
				}
				r.mu.Unlock()
			}
			b.phase, b.idx = phase2Did, len(b.svcs)-1
		case phase2Did: // leaf to root, once nobody has it open
			if !b.anyDid && !b.anyOpen && !r.ev.subscribed() {
				b.idx = -1 // nothing to wait for or call, nobody to tell
			}
			for b.idx >= 0 {
				x := b.svcs[b.idx]
				if b.anyOpen {
					r.mu.Lock()
					open := len(x.openers)
					r.mu.Unlock()
					if open > 0 {
						x.setWaiting("waits for its clients to close it (ServiceIsRequestingClose sent)")
						return progress
					}
				}
				if d, ok := x.impl.(DidTerminater); ok {
					ran, _ := x.tryCallback("DidTerminate", func() error {
						_ = faultinject.At(faultinject.DidTerminate, x)
						if x.wasStarted() {
							d.DidTerminate(x)
						}
						return nil
					})
					if !ran {
						x.setWaiting("worker waits for the running callback")
						return progress
					}
				}
				r.emit(x, StepDidTerminate, nil, 0, nil)
				b.idx--
				progress = true
			}
			b.phase, b.idx = phase3Finish, len(b.svcs)-1
		case phase3Finish: // leaf first
			for b.idx >= 0 {
				if !r.finish(b.svcs[b.idx]) {
					return progress
				}
				b.idx--
				progress = true
			}
			b.phase = phaseDone
			return true
		default:
			return progress
		}
	}
}

func (s *Service) wasStarted() bool {
	return s.started.Load()
}

func (s *Service) setWaiting(why string) {
	s.reg.mu.Lock()
	if s.term != nil {
		s.term.waiting = why
	}
	s.reg.mu.Unlock()
}

func (s *Service) sortedOpenersLocked() []*Service {
	return sortedByID(s.openers)
}

// finish is phase 3 for x: stop its jobs, wait for them and for its clients
// terminating elsewhere, detach surviving clients, Stop, release managed
// resources, detach x, drop the registry's reference. It returns false when
// x must wait; it resumes where it left off.
func (r *Registry) finish(x *Service) bool {
	t := x.term
	for {
		switch t.step {
		case finishCancel:
			x.stopQueue()
			x.stopCalls()
			t.step = finishDrain
		case finishDrain:
			if x.runningJobs() > 0 {
				x.setWaiting("waits for running jobs to return")
				return false
			}
			if len(x.callsInFlight()) > 0 {
				x.setWaiting("waits for client method calls to return")
				return false
			}
			t.step = finishDetachClients
		case finishDetachClients:
			r.mu.Lock()
			var survivors []*Service
			for _, c := range x.sortedClientsLocked() {
				if !c.active {
					t.waiting = "waits for client " + c.describe() + " to finish terminating"
					t.waitFor = c
					r.mu.Unlock()
					return false
				}
				survivors = append(survivors, c)
			}
			for _, c := range survivors {
				r.detachLocked(c, x)
			}
			r.mu.Unlock()
			for _, c := range survivors {
				x.TaggedRelease(clientLink{c})
				c.TaggedRelease(providerLink{x})
			}
			t.step = finishStop
		case finishStop:
			// A handler hears of its providers' termination before its
			// Stop: the messages were queued in phase 1 and 2, their
			// delivery runs on the mail pool and kicks us when done.
			if x.termMail.Load() > 0 {
				x.setWaiting("waits for its handler to be told of the termination (ServiceIsTerminated)")
				return false
			}
			// Every service takes the callback lock here, so that a Probe
			// or Start still running on it finishes first.
			d, isDriver := x.impl.(Driver)
			{
				ran, _ := x.tryCallback("Stop", func() error {
					defer x.markStopped()
					_ = faultinject.At(faultinject.Stop, x)
					if isDriver && x.wasStarted() {
						d.Stop(x)
					}
					return nil
				})
				if !ran {
					x.setWaiting("worker waits for the running callback before Stop")
					return false
				}
			}
			r.emit(x, StepStop, nil, 0, nil)
			t.step = finishDetach
		case finishDetach:
			x.finalReleaseResources()
			_ = faultinject.At(faultinject.Detach, x)
			r.mu.Lock()
			provs := x.providers
			for _, p := range provs {
				r.detachLocked(x, p)
			}
			x.providers = nil
			x.listed = false
			t.waiting, t.waitFor = "", nil
			r.mu.Unlock()
			for _, p := range provs {
				p.TaggedRelease(clientLink{x})
				x.TaggedRelease(providerLink{p})
			}
			t.step = finishDone
			x.registryLetGo()
			x.TaggedRelease(registryTag{})
			return true
		default:
			return true
		}
	}
}

func (s *Service) markStopped() {
	s.stopped.Store(true)
}

// detachLocked removes the edge c → p; an open of p by c dies with it. The
// caller releases the two references after unlocking.
func (r *Registry) detachLocked(c, p *Service) {
	delete(p.clients, c)
	if _, ok := p.openers[c]; ok {
		p.closeLocked(c)
	}
	if c.term == nil || c.term.step < finishDetach {
		// c survives p (it is not detaching from all its providers, which
		// drops the whole list): drop p from its providers.
		kept := c.providers[:0]
		for _, x := range c.providers {
			if x != p {
				kept = append(kept, x)
			}
		}
		c.providers = kept
	}
	if c.kind == kindDriver && c.started.Load() && p.matched && !p.drivenLocked() {
		// Matched means driven now: after an unload the nub shows that it
		// waits for a driver, and a later personality matches it again.
		p.matched = false
	}
	r.emit(c, StepDetach, p, 0, nil)
}

// drivenLocked reports whether a started driver is still attached to s.
func (s *Service) drivenLocked() bool {
	for c := range s.clients {
		if c.kind == kindDriver && c.started.Load() {
			return true
		}
	}
	return false
}

// TerminateSync terminates s and waits until s and every service its
// termination cascaded to are freed. When ctx ends first it returns a
// *BlockedError (errors.Is ErrBlocked and ctx.Err()) listing what blocks:
// clients holding a service open, running jobs and callbacks (since when),
// and the holders of outstanding references (with their stacks when the
// class is traced). Do not call it from a callback of s or its clients:
// their termination needs that callback to return.
func (s *Service) TerminateSync(ctx context.Context) error {
	return s.TerminateSyncWith(ctx, CauseUnknown)
}

// TerminateSyncWith is TerminateSync saying why (see TerminateWith).
func (s *Service) TerminateSyncWith(ctx context.Context, cause Cause) error {
	r := s.reg
	r.terminate(s, cause)
	targets, whole := r.cascadeOf(s)
	var err error
	if whole != nil {
		select {
		case <-whole.done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	} else {
		err = waitFreed(ctx, targets)
	}
	if err != nil {
		// All freed between the deadline and now (the batch's done is
		// closed just after its last free): that is success, not an
		// empty blocker report.
		if b, blocked := r.blockersAfterDeadline(targets, targets); blocked {
			return &BlockedError{Op: "terminate", Service: s.describe(), Blockers: b, Cause: err}
		}
	}
	return nil
}

// blockersAfterDeadline is what still blocks the services of watch after a
// wait for them ended, reported on report; blocked is false when every one
// of watch was freed meanwhile. A service can be unfreed and yet show no
// blocker for a moment — its last holder just let go and its free is about
// to be queued — and a report computed then was empty while the
// termination completed right after ("nothing found: still in progress",
// 1 in 10,000 explorer seeds under load). So an empty report is computed
// again, briefly, until it names something or everything is freed.
func (r *Registry) blockersAfterDeadline(watch, report []*Service) (b []Blocker, blocked bool) {
	for range 100 {
		if allFreed(watch) {
			return nil, false
		}
		if b = r.blockers(report); len(b) > 0 {
			return b, true
		}
		time.Sleep(time.Millisecond)
	}
	return b, !allFreed(watch)
}

func allFreed(ss []*Service) bool {
	for _, s := range ss {
		if !s.freedYet() {
			return false
		}
	}
	return true
}

// cascadeOf is s and the services its termination cascaded to; whole is
// their batch when they are all of it.
func (r *Registry) cascadeOf(s *Service) (svcs []*Service, whole *batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.term == nil {
		return []*Service{s}, nil
	}
	if b := s.term.b; b.svcs[0] == s {
		return b.svcs, b // immutable once phase 1 is done
	}
	in := map[*Service]bool{s: true}
	out := []*Service{s}
	for _, x := range s.term.b.svcs {
		if x != s && in[x.term.via] {
			in[x] = true
			out = append(out, x)
		}
	}
	return out, nil
}

func waitFreed(ctx context.Context, ss []*Service) error {
	for _, s := range ss {
		if s.freedYet() {
			continue
		}
		select {
		case <-s.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// blockers says what keeps each of ss from being freed, following a
// service that waits for a client terminating elsewhere to that client.
func (r *Registry) blockers(ss []*Service) []Blocker {
	var out []Blocker
	seen := map[*Service]bool{}
	for i := 0; i < len(ss); i++ {
		s := ss[i]
		if seen[s] {
			continue
		}
		seen[s] = true
		if s.freedYet() {
			continue
		}
		name := s.describe()
		add := func(what string, stacks ...string) {
			out = append(out, Blocker{Service: name, What: what, Stacks: stacks})
		}
		r.mu.Lock()
		openers := s.sortedOpenersLocked()
		excl := make([]bool, len(openers))
		for i, c := range openers {
			excl[i] = s.openers[c]
		}
		listed := s.listed
		waiting := ""
		if s.term != nil {
			waiting = s.term.waiting
			if w := s.term.waitFor; w != nil && !seen[w] {
				ss = append(ss[:len(ss):len(ss)], w)
			}
		}
		r.mu.Unlock()
		for i, c := range openers {
			mode := "shared"
			if excl[i] {
				mode = "exclusive"
			}
			add(fmt.Sprintf("open by %s (%s)", c.describe(), mode))
		}
		if what, since, ok := s.runningCallback(); ok {
			add(fmt.Sprintf("%s running since %s (%s)", what, since.Format("15:04:05.000"), time.Since(since).Round(time.Millisecond)))
		}
		for _, j := range s.runningJobInfo() {
			add(j)
		}
		for _, c := range s.callsInFlight() {
			add(c)
		}
		if waiting != "" {
			add("termination " + waiting)
		}
		if listed {
			if waiting == "" {
				add("termination in progress")
			}
			continue
		}
		if s.RetainCount() == 0 {
			add("being freed: its last reference is gone and its free is running")
			continue
		}
		if !s.Traced() {
			add(fmt.Sprintf("%d reference(s) outstanding after termination (class not traced: set DRVKIT_REFTRACE=%s or call refcount.Trace(%q) to see holders)",
				s.RetainCount(), s.Class(), s.Class()))
			continue
		}
		hs := s.ref.Holders()
		sort.Slice(hs, func(i, j int) bool { return hs[i].Tag < hs[j].Tag })
		for _, h := range hs {
			tag := h.Tag
			if tag == "" {
				tag = "(untagged)"
			}
			// Each stack leads with the frame to blame, the first outside
			// drvkit, then the full stack.
			var stacks []string
			for _, st := range h.Stacks {
				stacks = append(stacks, "retained at "+st.Blame().Short()+":\n"+indent(st.String()))
			}
			what := fmt.Sprintf("held by %s ×%d", tag, h.Count)
			if len(h.Stacks) > 0 {
				what += " (retained at " + h.Stacks[0].Blame().Short()
				if len(h.Stacks) > 1 {
					what += fmt.Sprintf(" and %d other stack(s)", len(h.Stacks)-1)
				}
				what += ")"
			}
			if h.Structural {
				what += ", structural"
			}
			if h.Ambiguous {
				what += fmt.Sprintf(", ambiguous: %d retain stack(s) for %d outstanding reference(s); any of them may be the one never released", len(h.Stacks), h.Count)
			}
			add(what, stacks...)
		}
	}
	return out
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = "  " + lines[i]
	}
	return strings.Join(lines, "\n")
}

// WaitQuiet waits until every service terminated so far has been freed
// (IOKit's waitQuiet for termination). Past ctx it returns a *BlockedError.
func (r *Registry) WaitQuiet(ctx context.Context) error {
	for {
		r.mu.Lock()
		ss := r.live.appendTo(nil, func(s *Service) bool { return s.term != nil })
		r.mu.Unlock()
		if len(ss) == 0 {
			// A service is unlisted before its free is announced: wait
			// for the announcements too, or a caller checking the trace
			// right after would find a termination without its free.
			return r.announced(ctx)
		}
		if err := waitFreed(ctx, ss); err != nil {
			if b, blocked := r.blockersAfterDeadline(ss, ss); blocked {
				return &BlockedError{Op: "wait quiet", Service: "registry", Blockers: b, Cause: err}
			}
		}
	}
}

// Unload unregisters every personality of driver name, terminates all its
// instances and waits for them to be freed. If ctx ends first it refuses
// with a *HasInstancesError (errors.Is ErrHasInstances): "classes have
// instances: Foo(2)" and what holds each. The personalities stay
// unregistered; call Unload again once the holders let go.
func (r *Registry) Unload(ctx context.Context, name string) error {
	r.UnregisterPersonality(name)
	r.mu.Lock()
	insts := r.live.appendTo(nil, func(s *Service) bool {
		return s.kind == kindDriver && s.pers != nil && s.pers.Name == name
	})
	r.mu.Unlock()
	var all []*Service
	for _, s := range insts {
		r.terminate(s, CauseUnload)
		c, _ := r.cascadeOf(s)
		all = append(all, c...)
	}
	err := waitFreed(ctx, insts)
	if err == nil {
		return nil
	}
	b, blocked := r.blockersAfterDeadline(insts, all)
	if !blocked {
		return nil
	}
	e := &HasInstancesError{Driver: name, Instances: map[string]int{}, Cause: err, Blockers: b}
	for _, s := range insts {
		if !s.freedYet() {
			e.Instances[s.Class()]++
		}
	}
	return e
}

// Close terminates every service, waits until all are freed or ctx ends,
// and stops the termination worker. On the deadline it cancels every
// remaining job queue (their Free hooks run) and returns a *BlockedError;
// the worker then carries on in the background and exits once the blockers
// let go and the last service is freed. A closed registry accepts no new
// publications, clients or personalities.
func (r *Registry) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	tops := r.live.appendTo(nil, func(s *Service) bool { return s.listed && len(s.providers) == 0 })
	r.mu.Unlock()
	for _, s := range tops {
		r.terminate(s, CauseShutdown)
	}
	var err error
	for {
		ss := r.Services()
		if len(ss) == 0 {
			break
		}
		if werr := waitFreed(ctx, ss); werr != nil {
			err = &BlockedError{Op: "close", Service: "registry", Blockers: r.blockers(r.Services()), Cause: werr}
			for _, s := range r.Services() {
				s.stopQueue()
			}
			break
		}
	}
	// The worker exits once every service is freed: at once when all went
	// well, later when a blocker lets go after the deadline.
	r.closing.Store(true)
	r.kick()
	if err == nil {
		<-r.wdone
	}
	return err
}
