package reliability

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/verify"
)

// The explorer's checks can fail: a reference nobody releases is reported
// with its holder, and a step that never returns trips the watchdog, which
// dumps the blockers and the goroutines.

var leaked []*driver.Service

type leakTag struct{}

func (leakTag) String() string { return "leaked by the explorer's self-test" }

func TestExplorerReportsLeak(t *testing.T) {
	opts := options()
	opts.Replay = "faults=leak@start teardown=app-kill,terminate:vendord,unplug io=1ms"
	opts.Settle = time.Second
	rep, err := verify.Verify(context.Background(), usbstorage.Entry, opts)
	require.NoError(t, err)
	defer func() { // let go so that nothing outlives this test
		for _, s := range leaked {
			s.TaggedRelease(leakTag{})
		}
		leaked = nil
	}()
	require.NotNil(t, rep.Failure, "a leaked reference must fail the run")
	msg := text(rep)
	require.Contains(t, msg, "outlive the run")
	require.Contains(t, msg, "leaked by the explorer's self-test")
}

// unstuck is made anew by each run of TestExplorerWatchdog (-count=N):
// a closed one would let the stuck step return at once.
var unstuck chan struct{}

// stuckHere is where the "stuck" fault waits.
func stuckHere() { <-unstuck }

func TestExplorerWatchdog(t *testing.T) {
	unstuck = make(chan struct{})
	opts := options()
	opts.Replay = "faults=stuck@stop teardown=unplug io=1ms"
	opts.RunTimeout = 2 * time.Second
	rep, err := verify.Verify(context.Background(), usbstorage.Entry, opts)
	require.NoError(t, err)
	require.NotNil(t, rep.Failure)
	var dog string
	for _, p := range rep.Failure.Problems {
		if p.Kind == "watchdog" {
			dog = p.Text
		}
	}
	require.Contains(t, dog, "WaitQuiet blockers", "blocker report")
	require.Contains(t, dog, "Stop running since", "names the stuck Stop:\n%.2000s", dog)
	require.Contains(t, dog, "reliability.stuckHere", "goroutine dump shows where it blocks")
	// The stuck run finishes once the step returns.
	close(unstuck)
	for deadline := time.Now().Add(time.Minute); faultinject.Enabled() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	require.False(t, faultinject.Enabled(), "the abandoned run ended")
}
