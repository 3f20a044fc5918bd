package reliability

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/userclient/server"
	"github.com/drvkit/drvkit/verify"
)

// midRun is what the "look" probe saw of the topology during I/O.
var midRun struct {
	sync.Mutex
	looked          bool
	kernel          string
	queued, running int
	apps            int
	services        []string
}

// The probes are fault kinds of their own, used only by the tests that
// name them (Manual).
func init() {
	for _, k := range []verify.FaultKind{
		{Name: "look", Manual: true, Doc: "look at the topology once every application is attached and vendord's jobs run",
			Inject: func(r *verify.Trial, _ verify.Site, _ verify.Fault) error {
				r.Go(func() { look(r) })
				return nil
			}},
		{Name: "leak", Manual: true, Doc: "a driver bug: a reference retained and never released",
			Inject: func(_ *verify.Trial, at verify.Site, _ verify.Fault) error {
				at.Service.TaggedRetain(leakTag{})
				leaked = append(leaked, at.Service)
				return nil
			}},
		{Name: "stuck", Manual: true, Doc: "a step that never returns until the test lets it",
			Inject: func(*verify.Trial, verify.Site, verify.Fault) error { stuckHere(); return nil }},
	} {
		if err := verify.RegisterFault(k); err != nil {
			panic(err)
		}
	}
}

// look waits (bounded: the machine may be loaded) until the four
// applications are attached and vendord runs four jobs with two queued,
// then records what it sees.
func look(r *verify.Trial) {
	deadline := time.Now().Add(20 * time.Second)
	var vendor *driver.Service
	for time.Now().Before(deadline) {
		vendor = nil
		for _, s := range r.Registry().Services() {
			if s.Class() == vendorClass {
				vendor = s
			}
		}
		if vendor != nil && r.Applications() == 4 {
			if q, n := vendor.Jobs(); n == 4 && q >= 2 {
				break
			}
		}
		time.Sleep(time.Millisecond)
	}
	midRun.Lock()
	defer midRun.Unlock()
	midRun.looked = true
	midRun.apps = r.Applications()
	if k, ok := r.Device().(interface{ KernelDriver(int) string }); ok {
		midRun.kernel = k.KernelDriver(0)
	}
	if vendor != nil {
		midRun.queued, midRun.running = vendor.Jobs()
	}
	for _, s := range r.Registry().Services() {
		midRun.services = append(midRun.services, fmt.Sprintf("%s %+v", s, s.State()))
	}
}

// TestExploreBaseline runs the topology without faults and checks it is
// what the explorer claims: both drivers started, the kernel driver
// detached while usbstorage runs, jobs queued and running, I/O succeeding.
func TestExploreBaseline(t *testing.T) {
	opts := options()
	// The I/O phase gives the clients time for 21 calls; the look then
	// holds the teardown until it has seen the topology (up to 10 s).
	opts.Replay = "faults=look@call+20 teardown=app-kill,terminate:vendord,unplug io=300ms"
	var calls, failed int64
	opts.Check = func(r *verify.Trial) []verify.Problem {
		calls, failed = r.Calls()
		return takeVendorChecks(r)
	}
	rep, err := verify.Verify(context.Background(), usbstorage.Entry, opts)
	require.NoError(t, err)
	require.True(t, rep.Passed(), "baseline: %s", text(rep))
	midRun.Lock()
	defer midRun.Unlock()
	require.True(t, midRun.looked, "clients made fewer than 21 calls")
	require.Equal(t, "usbfs", midRun.kernel, "usbstorage holds interface 0; apps %d jobs %d/%d registry:\n%s", midRun.apps, midRun.running, midRun.queued, strings.Join(midRun.services, "\n"))
	require.Equal(t, 4, midRun.apps, "4 applications attached")
	require.True(t, midRun.running == 4 && midRun.queued >= 2, "vendord has 4 running and ≥2 queued jobs, got %d/%d; registry:\n%s",
		midRun.running, midRun.queued, strings.Join(midRun.services, "\n"))
	require.Greater(t, calls, failed, "calls succeed")
}

// TestExploreBaselineProcs: with application processes, both drivers are
// opened through the socket, app-kill SIGKILLs the usbstorage application,
// and its user client goes all the way to free.
func TestExploreBaselineProcs(t *testing.T) {
	opts := options()
	opts.Replay = "faults= teardown=app-kill io=5ms procs"
	steps := map[string]int{}
	var exits []string
	opts.Check = func(r *verify.Trial) []verify.Problem {
		for _, e := range r.Events() {
			if e.Class == server.UserClientClass {
				steps[e.Step.String()]++
			}
		}
		exits = r.ProcessExits()
		return takeVendorChecks(r)
	}
	rep, err := verify.Verify(context.Background(), usbstorage.Entry, opts)
	require.NoError(t, err)
	require.True(t, rep.Passed(), "baseline: %s", text(rep))
	require.True(t, steps["attach"] == 2 && steps["free"] == 2, "two user clients attached and freed, got %v", steps)
	require.Contains(t, exits, "signal: killed", "the application was SIGKILLed: %v", exits)
}

func text(rep *verify.Report) string {
	var b strings.Builder
	_ = rep.WriteText(&b)
	return b.String()
}
