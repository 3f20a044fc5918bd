package driver

import (
	"sync"
	"sync/atomic"
	"time"
)

// Step is one step of a service's lifecycle.
type Step uint8

const (
	StepPublish       Step = iota + 1 // a nub is registered
	StepAttach                        // ServiceID attached as a client of ProviderID
	StepProbe                         // a candidate driver was probed (Score, Err)
	StepStart                         // Start returned (Err set when it failed)
	StepTerminate                     // phase 1: the service became inactive
	StepWillTerminate                 // phase 2, root to leaf
	StepDidTerminate                  // phase 2, leaf to root
	StepStop                          // phase 3: jobs drained, Stop returned
	StepDetach                        // ServiceID detached from ProviderID
	StepFree                          // the last reference went
)

var stepNames = [...]string{"", "publish", "attach", "probe", "start", "terminate",
	"willTerminate", "didTerminate", "stop", "detach", "free"}

func (s Step) String() string {
	if int(s) < len(stepNames) && s > 0 {
		return stepNames[s]
	}
	return "step?"
}

// ParseStep is the inverse of Step.String ("stop" → StepStop).
func ParseStep(name string) (Step, bool) {
	for i, n := range stepNames {
		if i > 0 && n == name {
			return Step(i), true
		}
	}
	return 0, false
}

// LifecycleEvent is one step of one service. Seq orders events totally.
type LifecycleEvent struct {
	Seq        uint64
	Time       time.Time
	ServiceID  uint64
	Class      string
	Name       string
	Step       Step
	ProviderID uint64 // attach and detach: the provider; otherwise 0
	Score      int    // probe: the probe score
	Refs       int    // free: the retain count seen by the free (always 0)
	Err        string // probe, start: why it failed
	// terminate: why the service was terminated and the root cause of the
	// termination it is part of (see Cause); CauseUnknown on other steps.
	Cause, RootCause Cause
}

type events struct {
	n    atomic.Int32 // subscriber count: the no-subscriber path is one load
	mu   sync.Mutex   // leaf lock: serializes delivery, so Seq order is delivery order
	seq  uint64
	subs map[int]func(LifecycleEvent)
	next int
}

// SubscribeLifecycle calls f for every lifecycle event, in order. f is
// called synchronously while the registry makes progress: it must be quick,
// must not block, and must not call into the registry (copy the event to a
// buffered channel or a slice). cancel stops delivery.
func (r *Registry) SubscribeLifecycle(f func(LifecycleEvent)) (cancel func()) {
	e := &r.ev
	e.mu.Lock()
	if e.subs == nil {
		e.subs = map[int]func(LifecycleEvent){}
	}
	id := e.next
	e.next++
	e.subs[id] = f
	e.n.Add(1)
	e.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			delete(e.subs, id)
			e.n.Add(-1)
			e.mu.Unlock()
		})
	}
}

// subscribed reports whether anyone receives lifecycle events now.
func (e *events) subscribed() bool { return e.n.Load() > 0 }

func (r *Registry) emit(s *Service, step Step, provider *Service, score int, err error) {
	e := &r.ev
	if e.n.Load() == 0 {
		return
	}
	ev := LifecycleEvent{Time: time.Now(), ServiceID: s.ID(), Class: s.Class(), Name: s.name, Step: step, Score: score}
	if provider != nil {
		ev.ProviderID = provider.ID()
	}
	if err != nil {
		ev.Err = err.Error()
	}
	if step == StepFree {
		ev.Refs = s.RetainCount()
	}
	e.send(&ev)
}

// emitTerminate is emit for StepTerminate, with s's causes; r.mu is held.
func (r *Registry) emitTerminate(s *Service) {
	e := &r.ev
	if e.n.Load() == 0 {
		return
	}
	ev := LifecycleEvent{Time: time.Now(), ServiceID: s.ID(), Class: s.Class(), Name: s.name, Step: StepTerminate}
	ev.Cause, ev.RootCause = s.term.causes()
	e.send(&ev)
}

// send numbers ev and delivers it to every subscriber.
func (e *events) send(ev *LifecycleEvent) {
	e.mu.Lock()
	e.seq++
	ev.Seq = e.seq
	for _, f := range e.subs {
		f(*ev)
	}
	e.mu.Unlock()
}
