package reliability

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/faultinject"
)

// The explorer's checks can fail: a reference nobody releases is reported
// with its holder, and a step that never returns trips the watchdog, which
// dumps the blockers and the goroutines.

func TestExplorerReportsLeak(t *testing.T) {
	defer setTimeout(4 * time.Second)()
	var wp atomic.Pointer[world]
	var gates gateSet
	in := faultinject.New()
	var leaked atomic.Pointer[driver.Service]
	in.MustAdd(faultinject.Rule{Point: faultinject.Start, Action: faultinject.Do(func(s faultinject.Site) {
		svc := s.Target.(*driver.Service)
		svc.TaggedRetain(leakTag{}) // a driver bug: retained, never released
		leaked.Store(svc)
	}).Labeled("leak@start")})
	_, err := runScenarioWith(scenario{IO: time.Millisecond, Teardown: defaultTeardown}, &wp, &gates, in)
	must(t, err != nil, "a leaked reference must fail the run")
	msg := err.Error()
	must(t, strings.Contains(msg, "outlive the run") && strings.Contains(msg, "leaked by the explorer's self-test"), "report names the leak and its holder:\n%s", msg)
	// Let go so that nothing outlives this test.
	leaked.Load().TaggedRelease(leakTag{})
}

type leakTag struct{}

func (leakTag) String() string { return "leaked by the explorer's self-test" }

func TestExplorerWatchdog(t *testing.T) {
	defer setTimeout(2 * time.Second)()
	g := faultinject.NewGate()
	sc := scenario{Faults: []plannedFault{{Point: faultinject.Stop, Kind: "stuck"}}, Teardown: []string{"unplug"}}
	stuck = g
	defer func() { stuck = nil }()
	_, err := run(sc)
	must(t, err != nil && strings.HasPrefix(err.Error(), "watchdog"), "a stuck run trips the watchdog: %v", err)
	msg := err.Error()
	must(t, strings.Contains(msg, "WaitQuiet blockers") && strings.Contains(msg, "Stop running since"), "blocker report names the stuck Stop:\n%.2000s", msg)
	must(t, strings.Contains(msg, "goroutines:") && strings.Contains(msg, "faultinject.(*Gate).wait"), "goroutine dump shows where it blocks")
	// The stuck run finishes once the gate opens (run released it).
	<-abandoned
}

func setTimeout(d time.Duration) func() {
	old := *flagTimeout
	*flagTimeout = d
	return func() { *flagTimeout = old }
}
