package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/internal/faultinject"
)

// Step is a lifecycle step where a fault can be injected: the points of
// the registry (publish … free), of the work queue (submit, job, jobFree)
// and of the user-client socket (handshake, read, write: only with an
// application process).
type Step string

// The steps, in lifecycle order.
const (
	StepPublish       Step = "publish"
	StepProbe         Step = "probe"
	StepStart         Step = "start"
	StepOpen          Step = "open"
	StepCall          Step = "call"
	StepWillTerminate Step = "willTerminate"
	StepDidTerminate  Step = "didTerminate"
	StepStop          Step = "stop"
	StepSubmit        Step = "submit"
	StepJob           Step = "job"
	StepJobFree       Step = "jobFree"
	StepDetach        Step = "detach"
	StepFree          Step = "free"
	StepHandshake     Step = "handshake"
	StepRead          Step = "read"
	StepWrite         Step = "write"
)

// Steps lists every step, in lifecycle order.
func Steps() []Step {
	var out []Step
	for _, p := range faultinject.Points() {
		out = append(out, Step(p.String()))
	}
	return out
}

func knownStep(s Step) bool {
	_, err := faultinject.ParsePoint(string(s))
	return err == nil
}

func (s Step) point() faultinject.Point {
	p, _ := faultinject.ParsePoint(string(s))
	return p
}

// CanFail reports whether the step turns an error into a failure of the
// operation (a failing Start, Publish, Open, Call, job, socket read…).
func (s Step) CanFail() bool { return s.point().CanFail() }

// InDriver reports whether the step runs driver code whose panics drvkit
// recovers (Probe, Start, a client method, the terminate hooks, Stop, a
// job).
func (s Step) InDriver() bool { return s.point().CanPanic() }

// socket reports a step of the user-client socket, reached only with an
// application process.
func (s Step) socket() bool {
	return s == StepHandshake || s == StepRead || s == StepWrite
}

// Site is one arrival at a step, where a fault fires.
type Site struct {
	Step Step
	// Service is the service the step is for (a driver instance, a nub,
	// a user client); nil at the socket steps.
	Service *driver.Service
	// Job is the job at the submit and jobFree steps.
	Job *driver.JobSite
}

// FaultKind is a kind of fault the verifier injects. The built-in kinds
// are registered at init; RegisterFault adds more, such as "driver-kill"
// from an out-of-process host.
type FaultKind struct {
	Name string
	Doc  string
	// Applies reports whether the kind can be injected at a step (nil:
	// every step).
	Applies func(Step) bool
	// Available says why the kind cannot be used with these options and
	// device (nil: it can), e.g. an I/O error on a model that cannot fail
	// a transfer, or a driver-process kill for an in-process driver.
	Available func(o *Options, dev Attached) error
	// Process: systematic schedules of this kind run application 0 as a
	// process.
	Process bool
	// Direct: for a driver that runs out of process, systematic schedules
	// of this kind (away from the socket steps) run application 0 as a
	// process calling on a direct call channel.
	Direct bool
	// RandomOnly: used only in random schedules.
	RandomOnly bool
	// Manual: used only where a schedule or Options.Kinds names it (a
	// test's own probe), never by exploration on its own.
	Manual bool
	// Inject runs at the site, on the goroutine that reached it. A
	// returned error fails the step where it can fail (Step.CanFail); a
	// panic is a panic at the site. Work that must let the step proceed
	// (an unplug, an unload) goes to Run.Go.
	Inject func(r *Trial, at Site, f Fault) error
}

var (
	faultsMu sync.Mutex
	faults   = map[string]FaultKind{}
)

// RegisterFault adds a fault kind; a name registered twice is refused.
func RegisterFault(k FaultKind) error {
	if !validName(k.Name) || k.Inject == nil {
		return fmt.Errorf("fault kind %q: needs a name and Inject", k.Name)
	}
	faultsMu.Lock()
	defer faultsMu.Unlock()
	if _, ok := faults[k.Name]; ok {
		return fmt.Errorf("fault kind %q registered twice", k.Name)
	}
	faults[k.Name] = k
	return nil
}

func lookupFault(name string) (FaultKind, bool) {
	faultsMu.Lock()
	defer faultsMu.Unlock()
	k, ok := faults[name]
	return k, ok
}

// FaultKinds lists the registered kinds in a stable order: the built-in
// ones first, as below, then others by name.
func FaultKinds() []FaultKind {
	faultsMu.Lock()
	defer faultsMu.Unlock()
	var out []FaultKind
	for _, n := range builtinOrder {
		if k, ok := faults[n]; ok {
			out = append(out, k)
		}
	}
	var rest []string
	for n := range faults {
		if !contains(builtinOrder, n) {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	for _, n := range rest {
		out = append(out, faults[n])
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// Timings of the faults: a hang outlasts the 15 ms a teardown's terminate
// waits and stays far below a run's watchdog; slow is a slow Start.
const (
	hangFor   = 60 * time.Millisecond
	slowFor   = 40 * time.Millisecond
	termAfter = 15 * time.Millisecond
)

// InjectedPanic is the value of every panic the verifier injects, so a
// report tells the driver's own panics from them.
type InjectedPanic struct{ At Step }

func (p InjectedPanic) String() string { return "verify: injected panic at " + string(p.At) }

var builtinOrder = []string{"unplug", "app-kill", "app-close", "unload", "terminate", "panic", "fail",
	"job-hang", "job-panic", "io-error", "no-device", "slow", "driver-kill", "block"}

// ErrNoDriverProcess: the driver runs in the verifier's process, so it has
// no process of its own to kill.
var ErrNoDriverProcess = errors.New("the driver runs in-process: no driver process to kill (bundles, with the out-of-process host)")

func init() {
	for _, k := range []FaultKind{
		{Name: "unplug", Doc: "the device is pulled: in-flight transfers fail with no-device, then the kernel's remove reaches the bridge",
			Inject: func(r *Trial, _ Site, _ Fault) error { r.Go(r.Unplug); return nil }},
		{Name: "app-kill", Doc: "an application holding the driver open is SIGKILLed (a real child process)", Process: true, Direct: true,
			Inject: func(r *Trial, _ Site, _ Fault) error { r.Go(func() { r.app(0, (app).kill) }); return nil }},
		{Name: "app-close", Doc: "an application closes the driver and exits",
			Inject: func(r *Trial, _ Site, _ Fault) error { r.Go(func() { r.app(-1, (app).quit) }); return nil }},
		{Name: "unload", Doc: "the driver is unloaded (Registry.Unload)",
			Inject: func(r *Trial, at Site, _ Fault) error {
				name := r.driverOf(at.Service)
				r.Go(func() { r.Unload(name) })
				return nil
			}},
		{Name: "terminate", Doc: "an administrator terminates the driver instance (drvctl terminate)",
			Inject: func(r *Trial, _ Site, _ Fault) error { r.Go(func() { r.Terminate("") }); return nil }},
		{Name: "panic", Doc: "the driver callback panics (drvkit recovers it)", Applies: Step.InDriver,
			Inject: func(_ *Trial, at Site, _ Fault) error { panic(InjectedPanic{At: at.Step}) }},
		{Name: "fail", Doc: "the step fails (Start, Publish, Open, a call, a job, a socket read or write)", Applies: Step.CanFail,
			Inject: func(_ *Trial, at Site, _ Fault) error { return fmt.Errorf("%s failed", at.Step) }},
		{Name: "job-hang", Doc: "a job ignores its cancellation until 60 ms past the service's termination (at the job step: the driver's own job)",
			Inject: func(r *Trial, at Site, _ Fault) error {
				if at.Step == StepJob && at.Service != nil {
					hang(at.Service)
					return nil
				}
				s, release, ok := r.Instance()
				if !ok {
					time.Sleep(hangFor)
					return nil
				}
				defer release()
				if s.Submit(driver.Job{Key: "verify-hang", Run: func(context.Context) error { hang(s); return nil }}) != nil {
					time.Sleep(hangFor)
				}
				return nil
			}},
		{Name: "job-panic", Doc: "a job panics (at the job step: the driver's own job)",
			Inject: func(r *Trial, at Site, _ Fault) error {
				if at.Step == StepJob {
					panic(InjectedPanic{At: at.Step})
				}
				r.submit("verify-panic", func(context.Context) error { panic(InjectedPanic{At: StepJob}) })
				return nil
			}},
		{Name: "io-error", Doc: "the device's next transfer fails with an I/O error",
			Available: func(_ *Options, dev Attached) error { return probeFail(dev, false) },
			Inject:    func(r *Trial, _ Site, _ Fault) error { return r.failNext(false) }},
		{Name: "no-device", Doc: "the device stops answering in the middle of the next transfer (ErrNoDevice), as it does just before the kernel reports its removal",
			Available: func(_ *Options, dev Attached) error { return probeFail(dev, true) },
			Inject:    func(r *Trial, _ Site, _ Fault) error { return r.failNext(true) }},
		{Name: "slow", Doc: "the step takes 40 ms longer and the device answers its next transfer 40 ms late (a slow Start, a slow Stop, …)",
			Inject: func(r *Trial, _ Site, _ Fault) error {
				_ = r.dev.SlowNext(slowFor)
				time.Sleep(slowFor)
				return nil
			}},
		{Name: "driver-kill", Doc: "the driver's own process is SIGKILLed (bundles run by an out-of-process host)", Direct: true,
			Available: func(o *Options, _ Attached) error {
				if o.Host == nil {
					return ErrNoDriverProcess
				}
				return nil
			},
			Inject: func(r *Trial, at Site, _ Fault) error { r.Go(func() { r.killDriver(at) }); return nil }},
		{Name: "block", Doc: "the step is held while another operation runs (random schedules)", RandomOnly: true,
			Inject: func(r *Trial, at Site, f Fault) error { r.block(f.Op); return nil }},
	} {
		if err := RegisterFault(k); err != nil {
			panic(err)
		}
	}
}

// hang is a job that ignores its cancellation: it runs until hangFor past
// the termination of s (at most maxHang, should nothing terminate it).
func hang(s *driver.Service) {
	t := time.NewTimer(maxHang)
	defer t.Stop()
	select {
	case <-s.Context().Done():
	case <-t.C:
	}
	time.Sleep(hangFor)
}

const maxHang = 10 * time.Second

// DriverHost is what an out-of-process host gives the verifier: the
// driver-kill fault SIGKILLs the process running the instance s. An error
// wrapping ErrNoDriverProcess says s has no process at that moment (not
// spawned yet, or gone).
type DriverHost interface {
	KillDriver(s *driver.Service) error
}

// RunHost is a DriverHost that runs the verified driver's instances
// itself, in processes of their own: the host of driver bundles
// (verify/bundlehost wires driver/host). Verify calls BindRun as each run
// starts, with the run's registry and the resources of its device model
// (what the host grants the driver process); a bundle's entry is verified
// only with one (ErrNeedsHost).
type RunHost interface {
	DriverHost
	BindRun(reg *driver.Registry, res *drivertable.Resources) (HostRun, error)
}

// HostRun is an out-of-process host's part of one run.
type HostRun struct {
	// Entry is what the run loads: its instances run in the host's
	// processes (zero: the verified entry as given).
	Entry drivertable.Entry
	// Quiesce, if set, runs once the run's registry is quiet, before it
	// is closed: the host stops relaunching crashed drivers.
	Quiesce func()
	// Check, if set, runs after the registry was closed, before the leak
	// check: what the host saw wrong (a driver process or its group left
	// running, the leaks a driver process reported with its culprit).
	Check func() []Problem
}

// killDriver SIGKILLs the process of the driver instance at the site (at
// a driver-code step) or of the run's live instance. Before and at start
// the process may not be spawned yet: it waits for it (bounded) so that
// the kill lands during the start; at later steps a driver with no
// process left (stopped, reaped) is noted, not waited for.
func (r *Trial) killDriver(at Site) {
	early := at.Step == StepPublish || at.Step == StepProbe || at.Step == StepStart
	deadline := time.Now().Add(killWait)
	for {
		svc := at.Service
		var release func()
		if svc == nil || !at.Step.InDriver() {
			s, rel, ok := r.Instance()
			if ok {
				svc, release = s, rel
			} else {
				svc = nil
			}
		}
		err := errNoInstance
		if svc != nil {
			err = r.opts.Host.KillDriver(svc)
		}
		if release != nil {
			release()
		}
		if err == nil {
			r.omu.Lock()
			r.kills++
			r.omu.Unlock()
			return
		}
		if !early || time.Now().After(deadline) || (svc != nil && svc.Context().Err() != nil && at.Step.InDriver()) || r.closing.Load() {
			r.note("driver-kill@%s: no driver process to kill (%v)", at.Step, err)
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

var errNoInstance = errors.New("no driver instance")

// killWait bounds how long a driver-kill before Start waits for the
// process to exist.
const killWait = 2 * time.Second

func probeFail(dev Attached, noDevice bool) error {
	if dev == nil {
		return nil
	}
	return dev.FailNext(noDevice)
}
