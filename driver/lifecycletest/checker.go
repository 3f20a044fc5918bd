package lifecycletest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/lifecyclecheck"
)

// Recorder collects the events of one registry.
type Recorder struct {
	mu     sync.Mutex
	events []driver.LifecycleEvent
	cancel func()
	root   uint64
}

// Record subscribes to r's lifecycle events until the test ends.
func Record(t testing.TB, r *driver.Registry) *Recorder {
	rec := &Recorder{root: r.Root().ID()}
	rec.cancel = r.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		rec.mu.Lock()
		rec.events = append(rec.events, e)
		rec.mu.Unlock()
	})
	t.Cleanup(rec.cancel)
	return rec
}

// Events returns a copy of the events so far, in order.
func (rec *Recorder) Events() []driver.LifecycleEvent {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]driver.LifecycleEvent(nil), rec.events...)
}

// Steps returns "step name" lines (attach/detach as "detach C<-P") for the
// events whose step is one of steps (all when none given), for exact-order
// assertions. Services are named by Name when set, else by ID.
func (rec *Recorder) Steps(steps ...driver.Step) []string {
	evs := rec.Events()
	names := map[uint64]string{rec.root: "root"}
	for _, e := range evs {
		if e.Name != "" {
			names[e.ServiceID] = e.Name
		} else if _, ok := names[e.ServiceID]; !ok {
			names[e.ServiceID] = fmt.Sprintf("%s#%d", e.Class, e.ServiceID)
		}
	}
	want := map[driver.Step]bool{}
	for _, s := range steps {
		want[s] = true
	}
	var out []string
	for _, e := range evs {
		if len(want) > 0 && !want[e.Step] {
			continue
		}
		line := e.Step.String() + " " + names[e.ServiceID]
		if e.ProviderID != 0 && (e.Step == driver.StepAttach || e.Step == driver.StepDetach) {
			p, ok := names[e.ProviderID]
			if !ok {
				p = fmt.Sprintf("#%d", e.ProviderID)
			}
			line += "<-" + p
		}
		out = append(out, line)
	}
	return out
}

// Check fails t if the trace so far breaks an invariant, or if a terminated
// service has not been freed (call it once the registry is quiet).
func (rec *Recorder) Check(t testing.TB) {
	t.Helper()
	if err := Validate(rec.Events(), true); err != nil {
		t.Fatalf("lifecycle trace violates the termination contract:\n%v", err)
	}
}

// CheckPartial is Check without the completeness rule, for a trace taken
// while terminations are still under way.
func (rec *Recorder) CheckPartial(t testing.TB) {
	t.Helper()
	if err := Validate(rec.Events(), false); err != nil {
		t.Fatalf("lifecycle trace violates the termination contract:\n%v", err)
	}
}

// Validate checks a trace; complete additionally requires every terminated
// service to have been stopped, detached and freed.
func Validate(events []driver.LifecycleEvent, complete bool) error {
	return lifecyclecheck.Validate(events, complete)
}
