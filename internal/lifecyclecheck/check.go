// Package lifecyclecheck validates lifecycle traces against the
// termination contract of DESIGN.md. driver/lifecycletest is its public
// face for tests; it lives here, without the testing package, so that
// programs checking traces (the Driver Verifier in drvctl) do not link it.
package lifecyclecheck

import (
	"fmt"
	"strings"

	"github.com/drvkit/drvkit/driver"
)

type svc struct {
	name                  string
	terminate, stop, free int // seq of the step, 0 if not seen
	start                 int
	root                  driver.Cause   // the root cause of its termination
	attached              map[uint64]int // provider → attach seq
	detached              map[uint64]int // provider → detach seq
	lastDetach            int
}

// Validate checks a trace; complete additionally requires every terminated
// service to have been stopped, detached and freed.
func Validate(events []driver.LifecycleEvent, complete bool) error {
	var errs []string
	fail := func(e driver.LifecycleEvent, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("event %d (%s %s#%d %q): %s", e.Seq, e.Step, e.Class, e.ServiceID, e.Name, fmt.Sprintf(format, args...)))
	}
	ss := map[uint64]*svc{}
	get := func(id uint64) *svc {
		s := ss[id]
		if s == nil {
			s = &svc{attached: map[uint64]int{}, detached: map[uint64]int{}}
			ss[id] = s
		}
		return s
	}
	// clientsOf[p] = clients currently attached to p
	clientsOf := map[uint64]map[uint64]bool{}
	// A trace that starts at the registry's first event has seen every
	// attachment: only then can a cascade be traced to its provider.
	fromStart := len(events) > 0 && events[0].Seq <= 1
	var last uint64
	for i, e := range events {
		seq := i + 1
		if e.Seq != 0 && e.Seq <= last {
			fail(e, "out of order (previous seq %d)", last)
		}
		last = e.Seq
		s := get(e.ServiceID)
		if e.Name != "" {
			s.name = e.Name
		}
		if s.free != 0 {
			fail(e, "after free")
		}
		if e.ProviderID != 0 {
			if p := ss[e.ProviderID]; p != nil && p.free != 0 {
				fail(e, "names provider #%d after its free", e.ProviderID)
			}
		}
		if e.Step != driver.StepTerminate && (e.Cause != driver.CauseUnknown || e.RootCause != driver.CauseUnknown) {
			fail(e, "carries a termination cause (%q, root %q) on a %s step", e.Cause.Text(), e.RootCause.Text(), e.Step)
		}
		switch e.Step {
		case driver.StepAttach:
			if _, dup := s.attached[e.ProviderID]; dup {
				fail(e, "attached twice to #%d", e.ProviderID)
			}
			if p := ss[e.ProviderID]; p != nil && p.stop != 0 {
				fail(e, "attached to #%d after its stop", e.ProviderID)
			}
			s.attached[e.ProviderID] = seq
			if clientsOf[e.ProviderID] == nil {
				clientsOf[e.ProviderID] = map[uint64]bool{}
			}
			clientsOf[e.ProviderID][e.ServiceID] = true
		case driver.StepTerminate:
			if s.terminate != 0 {
				fail(e, "terminated twice")
			}
			s.terminate = seq
			s.root = e.RootCause
			switch {
			case e.Cause != driver.CauseProviderTerminated:
				if e.Cause != e.RootCause {
					fail(e, "terminated directly (cause %q) but with root cause %q", e.Cause.Text(), e.RootCause.Text())
				}
			case e.RootCause != driver.CauseProviderTerminated && fromStart && !cascaded(s, ss, e.RootCause):
				fail(e, "cause %q, but no provider it is attached to was terminated before it with root cause %q",
					e.Cause.Text(), e.RootCause.Text())
			}
		case driver.StepStart:
			if s.stop != 0 {
				fail(e, "start after stop")
			}
			s.start = seq
		case driver.StepWillTerminate, driver.StepDidTerminate:
			if s.terminate == 0 {
				fail(e, "before terminate")
			}
			if s.stop != 0 {
				fail(e, "after stop")
			}
		case driver.StepStop:
			if s.stop != 0 {
				fail(e, "stopped twice")
			}
			if s.terminate == 0 {
				fail(e, "stop before terminate")
			}
			for c := range clientsOf[e.ServiceID] {
				fail(e, "stop while client #%d is still attached (detach(C from P) < stop(P))", c)
			}
			s.stop = seq
		case driver.StepDetach:
			// A trace taken from a running registry may begin after the
			// attachment: only a trace from the start must have seen it.
			if _, ok := s.attached[e.ProviderID]; !ok && fromStart {
				fail(e, "detach from #%d without attach", e.ProviderID)
			}
			if _, dup := s.detached[e.ProviderID]; dup {
				fail(e, "detached twice from #%d", e.ProviderID)
			}
			s.detached[e.ProviderID] = seq
			s.lastDetach = seq
			delete(clientsOf[e.ProviderID], e.ServiceID)
			if s.terminate != 0 && s.stop == 0 {
				fail(e, "detach after terminate but before stop")
			}
		case driver.StepFree:
			if e.Refs != 0 {
				fail(e, "free with %d references", e.Refs)
			}
			switch {
			case s.terminate == 0:
				fail(e, "free before terminate")
			case s.stop == 0:
				fail(e, "free before stop")
			}
			for p := range s.attached {
				if _, ok := s.detached[p]; !ok {
					fail(e, "free while attached to #%d", p)
				}
			}
			if len(clientsOf[e.ServiceID]) > 0 {
				fail(e, "free while clients are attached")
			}
			s.free = seq
		}
	}
	if complete {
		for id, s := range ss {
			if s.terminate != 0 && (s.stop == 0 || s.free == 0) {
				errs = append(errs, fmt.Sprintf("service #%d %q terminated but never %s", id, s.name, missing(s)))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(errs, "\n"))
}

// cascaded reports whether a provider s is attached to was terminated
// (before now) with root cause root: a termination that reached s by cascade
// came from one.
func cascaded(s *svc, ss map[uint64]*svc, root driver.Cause) bool {
	for p := range s.attached {
		if _, gone := s.detached[p]; gone {
			continue
		}
		if ps := ss[p]; ps != nil && ps.terminate != 0 && ps.root == root {
			return true
		}
	}
	return false
}

func missing(s *svc) string {
	if s.stop == 0 {
		return "stopped"
	}
	return "freed"
}
