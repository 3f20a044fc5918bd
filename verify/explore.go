package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/refcount"
)

// Options configure a verification. The zero value verifies with the
// device model the driver's needs select, every fault kind at every step,
// then random schedules for Budget.
type Options struct {
	// Device is the hardware model (nil: ForEntry).
	Device Device
	// Call is what applications call on the driver (nil: the device's).
	Call *Call
	// Extra drivers are loaded next to the one verified (a second
	// interface's driver), with what their applications call.
	Extra      []drivertable.Entry
	ExtraCalls map[string]Call
	// Kinds and Steps restrict the systematic pairs and the random
	// faults (nil: all).
	Kinds []string
	Steps []Step
	// Teardown is what systematic schedules do after their fault
	// (default DefaultTeardown).
	Teardown []string
	// NoSystematic skips the (step × kind) pairs.
	NoSystematic bool
	// Random is the number of random schedules (seeds Seed, Seed+1, …);
	// Budget bounds the whole verification's time instead (when both
	// are set, whichever ends first). Neither, or Random < 0: no random
	// schedules.
	Random int
	Budget time.Duration
	Seed   uint64
	// Replay runs only this schedule (Schedule.String's form).
	Replay string
	// Host is the out-of-process host that runs the driver (nil:
	// in-process); the driver-kill fault needs it.
	Host DriverHost
	// Check adds checks at the end of each run.
	Check func(r *Trial) []Problem
	// NoShrink reports a failing schedule as found.
	NoShrink bool
	// RunTimeout is a run's watchdog (default 60 s); Settle how long
	// the leak check waits for things to go (default 5 s).
	RunTimeout time.Duration
	Settle     time.Duration
	// ReplayCommand renders the one-line command that replays a
	// schedule (set by drvctl and by verifytest.Run).
	ReplayCommand func(Schedule) string
	// Progress, if set, hears every run's result as it ends.
	Progress func(Result)
	// ContinueOnFailure keeps exploring after a failure (the report
	// holds the first, shrunk).
	ContinueOnFailure bool

	// Each, if set, runs each schedule (verifytest.Run: as a subtest);
	// it must call run and return its result.
	Each func(name string, run func() Result) Result

	entry drivertable.Entry
}

// Result is one schedule's outcome.
type Result struct {
	Name     string        `json:"name"` // "unplug@start", "seed 42", "replay"
	Schedule string        `json:"schedule"`
	Fired    []string      `json:"fired,omitempty"` // the faults that fired
	Problems []Problem     `json:"problems,omitempty"`
	Notes    []string      `json:"notes,omitempty"` // deadlines passed with a blocker report
	Elapsed  time.Duration `json:"elapsed_ns"`
	// DriverKills is how many driver processes the driver-kill fault
	// SIGKILLed (it fires also where no process exists: before the
	// spawn, after the exit; Notes say so).
	DriverKills int `json:"driver_kills,omitempty"`
	// DirectChannels is how many application processes took a direct
	// call channel (a direct schedule, an out-of-process driver).
	DirectChannels int `json:"direct_channels,omitempty"`

	sched   Schedule
	matched bool // an instance of the verified driver existed
}

// Failed reports whether the run found a problem.
func (r Result) Failed() bool { return len(r.Problems) > 0 }

// Pair is one (step, kind) of the systematic phase and what came of it.
type Pair struct {
	Step Step   `json:"step"`
	Kind string `json:"kind"`
	// Status: "covered" (the fault fired), "unreached" (the driver never
	// arrived at the step: no WillTerminate, no jobs…), "n/a" (the kind
	// does not apply at the step or to this setup; Why says why),
	// "failed", "skipped" (after a failure or past the budget).
	Status string `json:"status"`
	Why    string `json:"why,omitempty"`
}

// Failure is a failing schedule, shrunk, with its culprit and replay.
type Failure struct {
	Found    string    `json:"found"`  // the schedule that failed first
	Shrunk   string    `json:"shrunk"` // the minimal schedule that still fails
	Seed     uint64    `json:"seed,omitempty"`
	Problems []Problem `json:"problems"`
	// Culprit is the first frame outside drvkit of the first problem
	// that has one.
	Culprit *refcount.Frame `json:"culprit,omitempty"`
	Replay  string          `json:"replay"`
	// ShrinkRuns is how many runs shrinking took.
	ShrinkRuns int `json:"shrink_runs"`
}

// Report is a whole verification.
type Report struct {
	Driver   string         `json:"driver"`
	Device   string         `json:"device"`
	Runs     int            `json:"runs"`
	Random   int            `json:"random_runs"`
	Seeds    []uint64       `json:"seeds,omitempty"` // first and last random seed run
	Pairs    []Pair         `json:"pairs"`
	Failure  *Failure       `json:"failure,omitempty"`
	Results  []Result       `json:"-"`
	Elapsed  time.Duration  `json:"elapsed_ns"`
	Faults   map[string]int `json:"faults_fired"` // per kind, over every run
	Failures int            `json:"failures"`
	// DriverKills: driver processes SIGKILLed by driver-kill, over every
	// run (an out-of-process driver's).
	DriverKills int `json:"driver_kills,omitempty"`
	// DirectRuns: runs whose application process called the driver on a
	// direct call channel.
	DirectRuns int `json:"direct_runs,omitempty"`
	// Systematic is the time the (step × fault) pairs took.
	Systematic time.Duration `json:"systematic_elapsed_ns"`
}

// noProcessWhy: a driver-kill pair that fired where the instance had no
// process (before its spawn, after its exit).
const noProcessWhy = "fired, but no driver process existed at this step"

// Passed reports whether no run failed.
func (r *Report) Passed() bool { return r.Failures == 0 }

// Covered counts the systematic pairs by status.
func (r *Report) Covered() map[string]int {
	out := map[string]int{}
	for _, p := range r.Pairs {
		out[p.Status]++
	}
	return out
}

// ErrInjectorBusy: another verification (or fault test) is running in
// this process; runs install a process-wide fault injector.
var ErrInjectorBusy = errors.New("another verification is running in this process")

// ErrNeedsHost: a bundle's driver runs in a process of its own; verifying
// it needs the out-of-process host that runs bundles (Options.Host), which
// also makes the driver-kill fault applicable.
var ErrNeedsHost = errors.New("a bundle's driver runs out of process: verifying it needs the out-of-process host (Options.Host, a RunHost: verify/bundlehost)")

// ErrNeverStarted: no run matched the driver to the device model (its
// personalities do not match it): nothing about the driver was verified.
var ErrNeverStarted = errors.New("the driver never started on the device model")

// neverStarted: no run (none failed) had an instance of the driver.
func neverStarted(rep *Report, o *Options) error {
	if rep.Runs == 0 || rep.Failure != nil {
		return nil
	}
	for _, res := range rep.Results {
		if res.matched {
			return nil
		}
	}
	return fmt.Errorf("verify %s: %w %s in %d runs (do its personalities match it? choose another model: --device, Options.Device)", o.entry.Name, ErrNeverStarted, o.Device, rep.Runs)
}

// serial lets one verification run at a time in a process.
var serial sync.Mutex

// Verify explores entry's driver with opts and reports what it found. It
// returns an error only when it could not verify (a bad option, a device
// model the driver cannot use); a driver that fails is a Report with a
// Failure.
func Verify(ctx context.Context, entry drivertable.Entry, opts Options) (*Report, error) {
	serial.Lock()
	defer serial.Unlock()
	o, err := resolve(entry, opts)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	rep := &Report{Driver: entry.Name, Device: o.Device.String(), Faults: map[string]int{}}
	defer func() { rep.Elapsed = time.Since(start) }()
	record := func(res Result) {
		rep.Runs++
		rep.Results = append(rep.Results, res)
		for _, f := range res.Fired {
			k, _, _ := strings.Cut(f, "@")
			rep.Faults[k]++
		}
		if res.Failed() {
			rep.Failures++
		}
		rep.DriverKills += res.DriverKills
		if res.DirectChannels > 0 {
			rep.DirectRuns++
		}
		if o.Progress != nil {
			o.Progress(res)
		}
	}
	fail := func(res Result) {
		if rep.Failure == nil {
			rep.Failure = o.failure(res)
		}
	}
	if o.Replay != "" {
		sc, err := ParseSchedule(o.Replay)
		if err != nil {
			return nil, err
		}
		res := o.runOne("replay", sc)
		record(res)
		if res.Failed() {
			o.NoShrink = true
			fail(res)
		}
		return rep, nil
	}
	deadline := time.Time{}
	if o.Budget > 0 {
		deadline = start.Add(o.Budget)
	}
	over := func() bool {
		return ctx.Err() != nil || (!deadline.IsZero() && time.Now().After(deadline)) || (rep.Failure != nil && !o.ContinueOnFailure)
	}
	avail := o.available()
	static := o.staticUnreached()
	if !o.NoSystematic {
		for _, st := range o.steps() {
			for _, k := range o.kinds() {
				p := Pair{Step: st, Kind: k.Name}
				switch {
				case k.RandomOnly:
					continue
				case k.Applies != nil && !k.Applies(st):
					p.Status, p.Why = "n/a", "cannot happen at this step"
				case avail[k.Name] != nil:
					p.Status, p.Why = "n/a", avail[k.Name].Error()
				case static[st] != "":
					p.Status, p.Why = "unreached", static[st]
				case over():
					p.Status = "skipped"
				default:
					sc := Schedule{Faults: []Fault{{Kind: k.Name, Step: st}}, Teardown: o.Teardown, IO: time.Millisecond,
						Procs: k.Process || st.socket()}
					// The path an out-of-process driver's calls take by
					// default; the socket steps stay on the daemon's.
					if k.Direct && o.outOfProcess() && !st.socket() {
						sc.Procs, sc.Direct = true, true
					}
					res := o.runOne(k.Name+"@"+string(st), sc)
					record(res)
					switch {
					case res.Failed():
						p.Status = "failed"
						fail(res)
					case len(res.Fired) > 0:
						p.Status = "covered"
						if k.Name == "driver-kill" && res.DriverKills == 0 {
							p.Why = noProcessWhy
						}
					default:
						p.Status, p.Why = "unreached", o.unreachedWhy(st)
					}
				}
				rep.Pairs = append(rep.Pairs, p)
			}
		}
	}
	rep.Systematic = time.Since(start)
	if err := neverStarted(rep, o); err != nil && ctx.Err() == nil {
		return nil, err
	}
	seed := o.Seed
	if seed == 0 {
		seed = 1
	}
	var spent time.Duration
	for i := 0; o.Random >= 0 && (o.Random > 0 || !deadline.IsZero()) && !over(); i++ {
		if o.Random > 0 && i >= o.Random {
			break
		}
		// Stay within the budget: no run that would likely end past it.
		if i > 0 && !deadline.IsZero() && time.Now().Add(2*spent/time.Duration(i)).After(deadline) {
			break
		}
		sc := o.randomSchedule(seed, avail)
		res := o.runOne(fmt.Sprintf("seed %d", seed), sc)
		spent += res.Elapsed
		record(res)
		rep.Random++
		if rep.Seeds == nil {
			rep.Seeds = []uint64{seed, seed}
		}
		rep.Seeds[1] = seed
		if res.Failed() {
			fail(res)
		}
		seed++
	}
	return rep, nil
}

func resolve(entry drivertable.Entry, opts Options) (*Options, error) {
	o := opts
	o.entry = entry
	if entry.Name == "" || entry.Personalities == nil {
		return nil, errors.New("verify: the driver entry has no name or no personalities")
	}
	if _, ok := o.Host.(RunHost); entry.Origin == drivertable.Bundle && !ok {
		return nil, fmt.Errorf("verify %s: %w", entry.Name, ErrNeedsHost)
	}
	if o.Device == nil {
		d, err := ForEntry(entry)
		if err != nil {
			return nil, err
		}
		o.Device = d
	}
	if o.Teardown == nil {
		o.Teardown = DefaultTeardown
	}
	for _, op := range o.Teardown {
		if !validOp(op) {
			return nil, fmt.Errorf("verify: unknown teardown operation %q", op)
		}
	}
	if o.RunTimeout == 0 {
		o.RunTimeout = 60 * time.Second
	}
	if o.Settle == 0 {
		o.Settle = 3 * time.Second
	}
	for _, k := range o.Kinds {
		if _, ok := lookupFault(k); !ok {
			return nil, fmt.Errorf("verify: unknown fault kind %q", k)
		}
	}
	for _, s := range o.Steps {
		if !knownStep(s) {
			return nil, fmt.Errorf("verify: unknown step %q", s)
		}
	}
	if o.ReplayCommand == nil {
		o.ReplayCommand = func(s Schedule) string {
			return fmt.Sprintf("drvctl verify %s --replay '%s'", entry.Name, s)
		}
	}
	if _, err := eventCounts(o.Device); err != nil {
		return nil, fmt.Errorf("verify: device model %s: %w", o.Device, err)
	}
	// Culprits come from the retain stacks: trace every class, unless
	// the environment chose (DRVKIT_REFTRACE).
	if os.Getenv(refcount.EnvVar) == "" {
		refcount.TraceAll()
	}
	return &o, nil
}

func (o *Options) kinds() []FaultKind {
	var out []FaultKind
	for _, k := range FaultKinds() {
		if (len(o.Kinds) == 0 && !k.Manual) || contains(o.Kinds, k.Name) {
			out = append(out, k)
		}
	}
	return out
}

func (o *Options) steps() []Step {
	if len(o.Steps) > 0 {
		return o.Steps
	}
	return Steps()
}

// available asks each kind whether it can be used here, on a device
// attached for the purpose.
func (o *Options) available() map[string]error {
	out := map[string]error{}
	dev, err := o.Device.Attach(drivertable.NewResources())
	if err == nil {
		defer dev.Close()
	}
	for _, k := range FaultKinds() {
		if k.Available != nil {
			out[k.Name] = k.Available(o, dev)
		}
	}
	return out
}

// staticUnreached lists the steps no run can reach, known without running
// one: a step that calls a driver callback (Probe, WillTerminate,
// DidTerminate) that neither the driver nor an extra one has. Faults at
// such a step fire only at the drivers' instances (driverMatch), and the
// registry never arrives there for a driver without the callback, so a
// run would only spend its time (a bundle's: a process spawned).
func (o *Options) staticUnreached() map[Step]string {
	out := map[Step]string{}
	ds := o.driverSamples()
	if len(ds) == 0 {
		return out
	}
	for _, c := range []struct {
		st  Step
		has func(driver.Driver) bool
		why string
	}{
		{StepProbe, func(d driver.Driver) bool { _, ok := d.(driver.Prober); return ok }, "the driver has no Probe"},
		{StepWillTerminate, func(d driver.Driver) bool { _, ok := d.(driver.WillTerminater); return ok }, "the driver has no WillTerminate"},
		{StepDidTerminate, func(d driver.Driver) bool { _, ok := d.(driver.DidTerminater); return ok }, "the driver has no DidTerminate"},
	} {
		some := false
		for _, d := range ds {
			some = some || c.has(d)
		}
		if !some {
			out[c.st] = c.why
		}
	}
	return out
}

// outOfProcess reports whether the verified driver's instances run in
// processes of their own (a RunHost's), which may serve direct call
// channels.
func (o *Options) outOfProcess() bool {
	_, ok := o.Host.(RunHost)
	return ok
}

// driverSamples makes one driver of every personality of the verified
// entry (for a RunHost, the host's: its proxy) and of the extra ones,
// without starting anything; nil if one cannot be made.
func (o *Options) driverSamples() []driver.Driver {
	res := drivertable.NewResources()
	dev, err := o.Device.Attach(res)
	if err != nil {
		return nil
	}
	defer dev.Close()
	entries := append([]drivertable.Entry{o.entry}, o.Extra...)
	if rh, ok := o.Host.(RunHost); ok {
		reg := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = reg.Close(ctx)
		}()
		hr, err := rh.BindRun(reg, res)
		if err != nil {
			return nil
		}
		if hr.Quiesce != nil {
			defer hr.Quiesce()
		}
		if hr.Entry.Name != "" {
			entries[0] = hr.Entry
		}
	}
	var out []driver.Driver
	for _, e := range entries {
		ps, err := e.Defaults(res)
		if err != nil {
			return nil
		}
		for _, p := range ps {
			if p.New == nil {
				return nil
			}
			out = append(out, p.New())
		}
	}
	return out
}

// unreachedWhy says why the driver never arrived at a step: a callback it
// does not have, jobs it does not submit.
func (o *Options) unreachedWhy(st Step) string {
	res := drivertable.NewResources()
	dev, err := o.Device.Attach(res)
	if err == nil {
		defer dev.Close()
	}
	ps, err := o.entry.Defaults(res)
	if err != nil || len(ps) == 0 || ps[0].New == nil {
		return "the driver never arrived at this step"
	}
	d := ps[0].New()
	switch st {
	case StepProbe:
		if _, ok := d.(driver.Prober); !ok {
			return "the driver has no Probe"
		}
	case StepWillTerminate:
		if _, ok := d.(driver.WillTerminater); !ok {
			return "the driver has no WillTerminate"
		}
	case StepDidTerminate:
		if _, ok := d.(driver.DidTerminater); !ok {
			return "the driver has no DidTerminate"
		}
	case StepSubmit, StepJob, StepJobFree:
		return "the driver submitted no job"
	}
	return "the driver never arrived at this step"
}

// randomSchedule derives a schedule from seed: 0–3 faults at random steps
// (the n-th arrival), random jitter, I/O time and teardown.
func (o *Options) randomSchedule(seed uint64, avail map[string]error) Schedule {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	sc := Schedule{Seed: seed, IO: time.Duration(rng.IntN(2000)) * time.Microsecond, Procs: rng.IntN(4) == 0}
	if sc.Procs && o.outOfProcess() {
		sc.Direct = rng.IntN(2) == 0
	}
	var steps []Step
	for _, s := range o.steps() {
		if !s.socket() || sc.Procs {
			steps = append(steps, s)
		}
	}
	var kinds []FaultKind
	for _, k := range o.kinds() {
		if avail[k.Name] == nil {
			kinds = append(kinds, k)
		}
	}
	for range rng.IntN(4) {
		if len(steps) == 0 || len(kinds) == 0 {
			break
		}
		st := steps[rng.IntN(len(steps))]
		k := kinds[rng.IntN(len(kinds))]
		if k.Applies != nil && !k.Applies(st) {
			k, _ = lookupFault("unplug")
		}
		f := Fault{Kind: k.Name, Step: st, Skip: rng.IntN(3)}
		if k.Name == "block" {
			f.Op = []string{OpAppKill, OpUnplug, OpUnload, OpTerminate}[rng.IntN(4)]
		}
		sc.Faults = append(sc.Faults, f)
	}
	if rng.IntN(2) == 0 {
		sc.Jitter = float64(int((0.05+rng.Float64()*0.3)*100)) / 100
	}
	ops := []string{OpAppKill, OpAppClose, OpUnload, OpUnplug, OpTerminate}
	for _, e := range o.Extra {
		ops = append(ops, OpUnload+":"+e.Name, OpTerminate+":"+e.Name)
	}
	rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	sc.Teardown = ops[:1+rng.IntN(len(ops))]
	return sc
}

// runOne runs sc under the watchdog (through Each).
func (o *Options) runOne(name string, sc Schedule) Result {
	sc.Procs = sc.Procs || sc.Direct
	if o.Each != nil && name != "shrink" {
		return o.Each(name, func() Result { return o.runOnce(name, sc) })
	}
	return o.runOnce(name, sc)
}

func (o *Options) runOnce(name string, sc Schedule) Result {
	start := time.Now()
	type out struct{ res Result }
	ch := make(chan out, 1)
	var rp struct {
		sync.Mutex
		r *Trial
	}
	go func() {
		res := o.execute(sc, func(r *Trial) { rp.Lock(); rp.r = r; rp.Unlock() })
		ch <- out{res}
	}()
	t := time.NewTimer(o.RunTimeout)
	defer t.Stop()
	var res Result
	select {
	case x := <-ch:
		res = x.res
	case <-t.C:
		rp.Lock()
		r := rp.r
		rp.Unlock()
		res = Result{Problems: []Problem{watchdog(r, o.RunTimeout)}}
		if r != nil {
			r.gates.releaseAll()
		}
		// The stuck run keeps the injector until it ends; wait for it a
		// while so the next run can install one.
		select {
		case <-ch:
		case <-time.After(o.RunTimeout):
		}
	}
	res.Name, res.Schedule, res.sched, res.Elapsed = name, sc.String(), sc, time.Since(start)
	return res
}

func watchdog(r *Trial, d time.Duration) Problem {
	var b strings.Builder
	fmt.Fprintf(&b, "the run overstayed its %v watchdog\n", d)
	if r != nil && r.reg != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := r.reg.WaitQuiet(ctx); err != nil {
			fmt.Fprintf(&b, "WaitQuiet blockers:\n%v\n", err)
		}
	}
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	fmt.Fprintf(&b, "goroutines:\n%s", buf)
	return Problem{Kind: "watchdog", Text: b.String()}
}

// execute runs one schedule and checks it.
func (o *Options) execute(sc Schedule, started func(*Trial)) (res Result) {
	before := takeBaseline()
	r, err := newRun(o, sc)
	if r != nil {
		started(r)
	}
	if err != nil {
		res.Problems = []Problem{{Kind: "setup", Text: err.Error()}}
		if r != nil {
			_ = r.shutdown()
		}
		return res
	}
	in := faultinject.New()
	if err := r.arm(in); err != nil {
		_ = r.shutdown()
		return Result{Problems: []Problem{{Kind: "setup", Text: err.Error()}}}
	}
	uninstall, err := in.Install()
	if err != nil {
		_ = r.shutdown()
		return Result{Problems: []Problem{{Kind: "setup", Text: fmt.Errorf("%w: %v", ErrInjectorBusy, err).Error()}}}
	}
	r.startPump()
	ctx := context.Background()
	if err := r.up(ctx); err != nil {
		r.Violate(Problem{Kind: "setup", Text: err.Error()})
	}
	r.waitCalls(5 * time.Second)
	time.Sleep(sc.IO)
	// What the faults started (an unplug, an unload) ends before the
	// teardown, so the teardown meets the state the fault made, not a
	// race with it. A fault at a teardown step acts during the teardown.
	r.acts.wait(10 * time.Second)
	for _, op := range sc.Teardown {
		r.op(op)
	}
	quiet := r.shutdown()
	uninstall()
	st := in.Stats()
	for _, f := range sc.Faults {
		if st.Fired[f.String()] > 0 {
			res.Fired = append(res.Fired, f.String())
		}
	}
	r.omu.Lock()
	res.Notes = append(res.Notes, r.notes...)
	res.DriverKills = r.kills
	res.DirectChannels = r.direct
	r.omu.Unlock()
	for _, e := range r.Events() {
		if contains(r.target.classes, e.Class) {
			res.matched = true
			break
		}
	}
	settle := o.Settle
	if !quiet {
		settle /= 5 // the registry was given Settle already
	}
	res.Problems = r.check(before, settle)
	return res
}

// shutdown ends the applications, waits up to Settle for the registry to
// be quiet and closes everything the run made. It reports whether the
// registry became quiet.
func (r *Trial) shutdown() bool {
	quiet := true
	r.amu.Lock()
	var apps []app
	for _, as := range r.apps {
		apps = append(apps, as...)
	}
	r.amu.Unlock()
	for _, a := range apps {
		a.stop()
	}
	if r.reg != nil {
		qctx, cancel := context.WithTimeout(context.Background(), r.opts.Settle)
		if err := r.reg.WaitQuiet(qctx); err != nil {
			quiet = false
			r.Violate(Problem{Kind: "blockers", Text: "the registry never became quiet: " + err.Error()})
		}
		cancel()
	}
	if r.srv != nil {
		if err := r.srv.Close(); err != nil {
			r.Violate(Problem{Kind: "setup", Text: "userclient server close: " + err.Error()})
		}
	}
	if r.hosted.Quiesce != nil {
		r.hosted.Quiesce()
	}
	r.closing.Store(true)
	if r.sim != nil {
		r.sim.Close()
	}
	if r.pumping {
		<-r.pumpEnd
	} else {
		close(r.pumpEnd) // what waits on it (a block fault's gate) ends
	}
	if r.bridge != nil {
		r.bridge.Close()
	}
	if r.reg != nil {
		d := r.opts.Settle
		if !quiet {
			d = 500 * time.Millisecond
		}
		cctx, cancel := context.WithTimeout(context.Background(), d)
		if err := r.reg.Close(cctx); err != nil {
			r.Violate(Problem{Kind: "blockers", Text: "registry close: " + err.Error()})
		}
		cancel()
	}
	r.gates.releaseAll()
	r.async.wait(0)
	if r.hosted.Check != nil {
		for _, p := range r.hosted.Check() {
			r.Violate(p)
		}
	}
	if r.unsub != nil {
		r.unsub()
	}
	if r.dir != "" {
		_ = removeAll(r.dir)
	}
	return quiet
}

// problemRank orders problems for the culprit: the driver's own panic
// first, then what it leaked, then broken rules.
var problemRank = map[string]int{"panic": 0, "leak": 1, "goroutine": 2, "use-after-free": 3, "contract": 4, "job-free": 5, "notify": 6, "device": 7, "fd": 8, "process": 9, "trace": 10}

func rank(p Problem) int {
	if n, ok := problemRank[p.Kind]; ok {
		return n
	}
	return 20
}

func primaryKind(ps []Problem) string {
	best := ""
	for _, p := range ps {
		if best == "" || rank(p) < problemRank[best] {
			best = p.Kind
		}
	}
	return best
}

// failure shrinks res's schedule and makes the failure report.
func (o *Options) failure(res Result) *Failure {
	f := &Failure{Found: res.Schedule, Seed: res.sched.Seed}
	final := res
	if !o.NoShrink {
		final, f.ShrinkRuns = o.shrink(res)
	}
	f.Shrunk = final.Schedule
	f.Problems = append([]Problem(nil), final.Problems...)
	sort.SliceStable(f.Problems, func(i, j int) bool { return rank(f.Problems[i]) < rank(f.Problems[j]) })
	for _, p := range f.Problems {
		if p.Culprit != nil {
			f.Culprit = p.Culprit
			break
		}
	}
	f.Replay = o.ReplayCommand(final.sched)
	return f
}

// shrink removes what the failure does not need: faults, teardown steps,
// jitter, I/O time, the application process, skips. A candidate is kept
// when it still fails with the original's primary kind of problem.
func (o *Options) shrink(res Result) (Result, int) {
	want := primaryKind(res.Problems)
	best := res
	runs := 0
	const maxRuns = 40
	try := func(sc Schedule) bool {
		if runs >= maxRuns {
			return false
		}
		runs++
		r := o.runOne("shrink", sc)
		for _, p := range r.Problems {
			if p.Kind == want {
				best = r
				return true
			}
		}
		return false
	}
	for changed := true; changed && runs < maxRuns; {
		changed = false
		cur := best.sched
		for i := range cur.Faults {
			c := cur
			c.Faults = append(append([]Fault(nil), cur.Faults[:i]...), cur.Faults[i+1:]...)
			if try(c) {
				changed = true
				break
			}
		}
		if changed {
			continue
		}
		for i := range cur.Teardown {
			c := cur
			c.Teardown = append(append([]string(nil), cur.Teardown[:i]...), cur.Teardown[i+1:]...)
			if try(c) {
				changed = true
				break
			}
		}
		if changed {
			continue
		}
		simpler := []func(*Schedule) bool{
			func(s *Schedule) bool { ok := s.Jitter > 0; s.Jitter = 0; return ok },
			func(s *Schedule) bool { ok := s.IO > time.Millisecond; s.IO = time.Millisecond; return ok },
			func(s *Schedule) bool { ok := s.Direct; s.Direct = false; return ok },
			func(s *Schedule) bool {
				ok := s.Procs && !s.Direct && !needsProcess(s)
				s.Procs = false
				return ok
			},
			func(s *Schedule) bool {
				ok := false
				s.Faults = append([]Fault(nil), s.Faults...)
				for i := range s.Faults {
					if s.Faults[i].Skip > 0 {
						s.Faults[i].Skip, ok = 0, true
					}
				}
				return ok
			},
			func(s *Schedule) bool { ok := s.Seed != 0; s.Seed = 0; return ok },
		}
		for _, simplify := range simpler {
			c := cur
			if simplify(&c) && try(c) {
				changed = true
				break
			}
		}
	}
	return best, runs
}

func needsProcess(s *Schedule) bool {
	for _, f := range s.Faults {
		if f.Step.socket() {
			return true
		}
	}
	return false
}
