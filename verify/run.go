package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/userclient/server"
)

// Trial is one schedule being executed: a registry with the drivers loaded,
// the device plugged through the simulated kernel and the hotplug bridge,
// applications doing I/O, the faults armed. Fault kinds act on it.
type Trial struct {
	opts   *Options
	sched  Schedule
	target *driverUnder
	extra  []*driverUnder

	reg     *driver.Registry
	dev     Attached
	dir     string
	sim     *sim.Sim
	bridge  *hotplug.Bridge
	pumpEnd chan struct{}
	pumping bool // pump started (by execute, after the faults were installed)
	counts  [2]int

	evMu   sync.Mutex
	events []driver.LifecycleEvent
	unsub  func()

	hmu     sync.Mutex
	hcond   *sync.Cond
	handled int

	unplugMu  sync.Mutex
	unplugged bool
	closing   atomic.Bool

	hosted HostRun // the out-of-process host's part of the run (RunHost)

	sock  string
	srv   *server.Server
	amu   sync.Mutex
	apps  map[string][]app // per driver class
	async counter          // every goroutine the run started for its faults
	acts  counter          // what faults started with Go
	gates gateSet

	calls, callErrs atomic.Int64

	// Observed at the fault hooks (under the injector's lock).
	omu       sync.Mutex
	stopped   map[uint64]bool
	freed     map[uint64]bool
	jobs      map[uint64]int // job number → Free runs
	jobOf     map[uint64]string
	panics    []panicRecord
	problems  []Problem
	notes     []string
	faultSeen []string
	kills     int // driver processes the driver-kill fault killed
	direct    int // application processes that took a direct call channel
}

// driverUnder is one driver loaded in a run.
type driverUnder struct {
	name    string
	classes []string
	ps      []driver.Personality
	call    Call
}

type panicRecord struct {
	msg, stack string
}

// Events returns the run's lifecycle trace so far.
func (r *Trial) Events() []driver.LifecycleEvent {
	r.evMu.Lock()
	defer r.evMu.Unlock()
	return append([]driver.LifecycleEvent(nil), r.events...)
}

// Applications is how many applications the run attached or started.
func (r *Trial) Applications() int {
	r.amu.Lock()
	defer r.amu.Unlock()
	n := 0
	for _, as := range r.apps {
		n += len(as)
	}
	return n
}

// Calls counts the embedded applications' calls, and the failed ones.
func (r *Trial) Calls() (calls, failed int64) { return r.calls.Load(), r.callErrs.Load() }

// ProcessExits describes how each application process ended ("signal:
// killed"), once the run has stopped them.
func (r *Trial) ProcessExits() []string {
	r.amu.Lock()
	defer r.amu.Unlock()
	var out []string
	for _, as := range r.apps {
		for _, a := range as {
			if p, ok := a.(*process); ok && p.cmd.ProcessState != nil {
				out = append(out, p.cmd.ProcessState.String())
			}
		}
	}
	return out
}

// Registry is the run's registry.
func (r *Trial) Registry() *driver.Registry { return r.reg }

// Device is the run's device.
func (r *Trial) Device() Attached { return r.dev }

// Schedule is the plan being run.
func (r *Trial) Schedule() Schedule { return r.sched }

// Go runs f on its own goroutine, which the run waits for before its
// checks, and gives it a moment to act while the step that started it is
// still in progress.
func (r *Trial) Go(f func()) {
	r.async.add()
	r.acts.add()
	done := make(chan struct{})
	go func() {
		defer r.async.done()
		defer r.acts.done()
		defer close(done)
		f()
	}()
	t := time.NewTimer(time.Millisecond)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// Violate records a broken rule (an extra check of Options.Check may call
// it during the run).
func (r *Trial) Violate(p Problem) {
	r.omu.Lock()
	r.problems = append(r.problems, p)
	r.omu.Unlock()
}

func (r *Trial) note(format string, args ...any) {
	r.omu.Lock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
	r.omu.Unlock()
}

// Instance returns the first active instance of the driver under test.
func (r *Trial) Instance() (*driver.Service, func(), bool) {
	return r.instanceOf(r.target.classes)
}

func (r *Trial) instanceOf(classes []string) (*driver.Service, func(), bool) {
	for _, s := range r.reg.Services() {
		if contains(classes, s.Class()) {
			if x, release, ok := r.reg.Lookup(s.ID()); ok {
				return x, release, true
			}
		}
	}
	return nil, nil, false
}

func (r *Trial) driverOf(s *driver.Service) string {
	if s != nil && s.Personality() != nil {
		for _, d := range append([]*driverUnder{r.target}, r.extra...) {
			if d.name == s.Personality().Name {
				return d.name
			}
		}
	}
	return r.target.name
}

func (r *Trial) byName(name string) *driverUnder {
	for _, d := range append([]*driverUnder{r.target}, r.extra...) {
		if d.name == name || contains(d.classes, name) {
			return d
		}
	}
	return nil
}

// Unplug pulls the device: the fake goes first (in-flight transfers fail
// with no-device), then the kernel's remove uevents reach the bridge.
func (r *Trial) Unplug() {
	r.unplugMu.Lock()
	defer r.unplugMu.Unlock()
	if r.unplugged || r.closing.Load() {
		return
	}
	r.unplugged = true
	r.dev.Pull()
	frag, err := sim.ParseScenarioFragment("verify", r.opts.Device.Unplug())
	if err != nil {
		r.Violate(Problem{Kind: "setup", Text: "unplug fragment: " + err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.sim.Inject(ctx, frag); err != nil {
		if !errors.Is(err, hotplug.ErrClosed) {
			r.Violate(Problem{Kind: "setup", Text: "unplug: " + err.Error()})
		}
		return
	}
	r.waitHandled(r.counts[0] + r.counts[1])
	// The bridge terminates the removed nubs on its own workers: wait for
	// them, so that the unplug is the cause of what it ends.
	if err := r.bridge.Flush(ctx); err != nil && !errors.Is(err, hotplug.ErrClosed) {
		r.Violate(Problem{Kind: "setup", Text: "unplug: bridge flush: " + err.Error()})
	}
	// Every driver instance on the device goes with it (bounded: a nub
	// the bridge lets go of later is the bridge's business, not the
	// driver's).
	var classes []string
	for _, d := range append([]*driverUnder{r.target}, r.extra...) {
		classes = append(classes, d.classes...)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s, release, ok := r.instanceOf(classes)
		if !ok {
			break
		}
		release()
		_ = s
	}
}

// Unload unloads a driver with a 10 s deadline; a refusal must name what
// blocks it.
func (r *Trial) Unload(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.reg.Unload(ctx, name)
	if err == nil {
		return
	}
	var he *driver.HasInstancesError
	if !errors.As(err, &he) || len(he.Blockers) == 0 {
		r.Violate(Problem{Kind: "blockers", Text: fmt.Sprintf("unload %s: want a holder report, got %v", name, err)})
		return
	}
	r.note("unload %s refused: %s", name, firstLine(err.Error()))
}

// Terminate terminates the first live instance of a driver (the one under
// test for "") as an administrator does, waiting 15 ms; past it the error
// must say what blocks.
func (r *Trial) Terminate(name string) {
	d := r.target
	if name != "" {
		if d = r.byName(name); d == nil {
			return
		}
	}
	s, release, ok := r.instanceOf(d.classes)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), termAfter)
	defer cancel()
	release() // TerminateSync waits for the free: our reference must go
	err := s.TerminateSyncWith(ctx, driver.CauseAdmin)
	if err == nil {
		return
	}
	var be *driver.BlockedError
	if !errors.As(err, &be) || !errors.Is(err, driver.ErrBlocked) || len(be.Blockers) == 0 {
		r.Violate(Problem{Kind: "blockers", Text: fmt.Sprintf("terminate %s: want a blocker report, got %v", d.name, err)})
		return
	}
	r.note("terminate %s blocked: %s", d.name, firstLine(err.Error()))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// waitCalls waits until the applications made a first call (bounded): a
// loaded machine must not let the teardown start before any I/O, or the
// call step is never reached.
func (r *Trial) waitCalls(d time.Duration) {
	if r.target.call.Method == "" {
		return
	}
	for deadline := time.Now().Add(d); r.calls.Load() == 0 && time.Now().Before(deadline); {
		_, release, ok := r.Instance()
		if !ok {
			return // no instance: no calls to wait for
		}
		release()
		time.Sleep(200 * time.Microsecond)
	}
}

// submit gives the driver instance a job; false if none takes one.
func (r *Trial) submit(key string, run func(context.Context) error) bool {
	s, release, ok := r.Instance()
	if !ok {
		return false
	}
	defer release()
	return s.Submit(driver.Job{Key: key, Run: run}) == nil
}

// failNext arms a transfer fault; a model that cannot was refused up front
// (FaultKind.Available), so its error is not the step's.
func (r *Trial) failNext(noDevice bool) error {
	_ = r.dev.FailNext(noDevice)
	return nil
}

// app applies f to the i-th live application of the driver under test
// (-1: the last).
func (r *Trial) app(i int, f func(app)) {
	r.amu.Lock()
	var a app
	live := r.apps[r.target.name]
	if i < 0 {
		for j := len(live) - 1; j >= 0; j-- {
			if live[j].alive() {
				a = live[j]
				break
			}
		}
		i = len(live) // no more looking
	}
	for _, x := range live {
		if i >= len(live) {
			break
		}
		if x.alive() {
			if i == 0 {
				a = x
				break
			}
			i--
		}
	}
	r.amu.Unlock()
	if a != nil {
		f(a)
	}
}

func (r *Trial) op(name string) {
	base, arg, _ := strings.Cut(name, ":")
	switch base {
	case OpAppKill:
		r.app(0, (app).kill)
	case OpAppClose:
		r.app(-1, (app).quit)
	case OpUnplug:
		r.Unplug()
	case OpUnload:
		if arg == "" {
			arg = r.target.name
		}
		r.Unload(arg)
	case OpTerminate:
		r.Terminate(arg)
	}
}

// block holds the step while op runs.
func (r *Trial) block(op string) {
	done := make(chan struct{})
	r.Go(func() { r.op(op); close(done) })
	t := time.NewTimer(500 * time.Microsecond)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-r.pumpEnd:
	}
}

// counter is a WaitGroup whose Add may race with a wait: faults fire at
// any time, the teardown's wait included.
type counter struct {
	mu   sync.Mutex
	n    int
	idle chan struct{}
}

func (c *counter) add() {
	c.mu.Lock()
	if c.n == 0 {
		c.idle = make(chan struct{})
	}
	c.n++
	c.mu.Unlock()
}

func (c *counter) done() {
	c.mu.Lock()
	c.n--
	if c.n == 0 {
		close(c.idle)
	}
	c.mu.Unlock()
}

// wait waits until the count is zero, at most d (0: no limit).
func (c *counter) wait(d time.Duration) {
	c.mu.Lock()
	if c.n == 0 {
		c.mu.Unlock()
		return
	}
	idle := c.idle
	c.mu.Unlock()
	if d == 0 {
		<-idle
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

type gateSet struct {
	mu sync.Mutex
	gs []*faultinject.Gate
}

func (g *gateSet) releaseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, x := range g.gs {
		x.Release()
	}
}

// eventCounts is how many uevents the plug and the unplug produce (the
// simulator is deterministic), so a run knows when the bridge saw them.
var countCache sync.Map // plug+unplug text → [2]int

func eventCounts(dev Device) ([2]int, error) {
	key := dev.Plug() + "\x00" + dev.Unplug()
	if v, ok := countCache.Load(key); ok {
		return v.([2]int), nil
	}
	var n [2]int
	for i, text := range []string{dev.Plug(), dev.Plug() + dev.Unplug()} {
		sc, err := sim.ParseScenarioString("count", text)
		if err != nil {
			return n, err
		}
		src, err := sim.New(sc, sim.Config{})
		if err != nil {
			return n, err
		}
		for {
			_, err := src.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				src.Close()
				return n, err
			}
			n[i]++
		}
		src.Close()
	}
	n[1] -= n[0]
	countCache.Store(key, n)
	return n, nil
}

// logHandler keeps the registry's records of driver panics.
type logHandler struct{ r *Trial }

func (h logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h logHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h logHandler) WithGroup(string) slog.Handler                { return h }
func (h logHandler) Handle(_ context.Context, rec slog.Record) error {
	if !strings.Contains(rec.Message, "panicked") {
		return nil
	}
	var p panicRecord
	var svc string
	rec.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "panic":
			p.msg = a.Value.String()
		case "stack":
			p.stack = a.Value.String()
		case "service":
			svc = a.Value.String()
		}
		return true
	})
	if strings.HasPrefix(p.msg, "verify: injected panic") {
		return nil
	}
	p.msg = fmt.Sprintf("%s (%s): %s", rec.Message, svc, p.msg)
	h.r.omu.Lock()
	h.r.panics = append(h.r.panics, p)
	h.r.omu.Unlock()
	return nil
}

// newRun builds the run's world; up plugs the device.
func newRun(o *Options, sc Schedule) (*Trial, error) {
	r := &Trial{opts: o, sched: sc, pumpEnd: make(chan struct{}), apps: map[string][]app{},
		stopped: map[uint64]bool{}, freed: map[uint64]bool{}, jobs: map[uint64]int{}, jobOf: map[uint64]string{}}
	r.hcond = sync.NewCond(&r.hmu)
	var err error
	if r.counts, err = eventCounts(o.Device); err != nil {
		return nil, err
	}
	r.reg = driver.NewRegistry(driver.WithLogger(slog.New(logHandler{r})))
	r.unsub = r.reg.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		r.evMu.Lock()
		r.events = append(r.events, e)
		r.evMu.Unlock()
	})
	res := drivertable.NewResources()
	if r.dev, err = o.Device.Attach(res); err != nil {
		return r, err
	}
	for i, e := range append([]drivertable.Entry{o.entry}, o.Extra...) {
		if rh, ok := o.Host.(RunHost); ok && i == 0 {
			if r.hosted, err = rh.BindRun(r.reg, res); err != nil {
				return r, fmt.Errorf("out-of-process host: %w", err)
			}
			if r.hosted.Entry.Name != "" {
				e = r.hosted.Entry
			}
		}
		ps, err := e.Defaults(res)
		if err != nil {
			return r, err
		}
		d := &driverUnder{name: e.Name, ps: ps, call: o.Device.Call()}
		if i == 0 && o.Call != nil {
			d.call = *o.Call
		}
		if i > 0 {
			d.call = Call{}
			if c, ok := o.ExtraCalls[e.Name]; ok {
				d.call = c
			}
		}
		for _, p := range ps {
			if err := r.reg.RegisterPersonality(p); err != nil {
				return r, err
			}
			if !contains(d.classes, p.Class) {
				d.classes = append(d.classes, p.Class)
			}
		}
		if i == 0 {
			r.target = d
		} else {
			r.extra = append(r.extra, d)
		}
	}
	if r.dir, err = os.MkdirTemp("", "drvkit-verify-"); err != nil {
		return r, err
	}
	if s, ok := r.dev.(sysfsUser); ok {
		s.setSysfs(r.dir)
	}
	if sc.Procs {
		r.sock = filepath.Join(r.dir, "drvkit.sock")
		// Calls stay on the daemon's path, where the faults of the call
		// step are injected, unless the schedule says direct.
		r.srv, err = server.Listen(server.NewRegistryBackend(r.reg), server.Config{Path: r.sock, GID: -1,
			Policy: server.Policy{Rules: []server.Rule{{AnyUser: true}}}, NoDirectCalls: !sc.Direct})
		if err != nil {
			return r, err
		}
	}
	scn, err := sim.ParseScenarioString("verify", o.Device.Plug())
	if err != nil {
		return r, err
	}
	if r.sim, err = sim.New(scn, sim.Config{SysfsDir: r.dir, Live: true}); err != nil {
		return r, err
	}
	r.bridge = hotplug.NewBridge(r.reg, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: r.dir, Logger: slog.New(slog.DiscardHandler)})
	// The pump starts once the run's faults are installed (startPump):
	// started here, the plug's publications could reach Start before the
	// injector, and a fault at start would not fire (seen under load).
	return r, nil
}

// startPump starts the bridge's event loop (once).
func (r *Trial) startPump() {
	r.pumping = true
	go r.pump()
}

// pump is the bridge's event loop: the device model sees each event first.
func (r *Trial) pump() {
	defer close(r.pumpEnd)
	for {
		ev, err := r.sim.Next(context.Background())
		if err != nil {
			r.hmu.Lock()
			r.handled = -1 << 30
			r.hcond.Broadcast()
			r.hmu.Unlock()
			return
		}
		r.dev.Event(ev)
		r.bridge.Handle(ev)
		r.hmu.Lock()
		r.handled++
		r.hcond.Broadcast()
		r.hmu.Unlock()
	}
}

func (r *Trial) waitHandled(n int) bool {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	for r.handled >= 0 && r.handled < n {
		r.hcond.Wait()
	}
	return r.handled >= n
}

// up waits for the plug's publications, then gives each driver instance
// that started two applications. Faults may have removed any part of it.
func (r *Trial) up(ctx context.Context) error {
	r.waitHandled(r.counts[0])
	if err := r.bridge.Flush(ctx); err != nil && !errors.Is(err, hotplug.ErrClosed) {
		return fmt.Errorf("bridge flush: %w", err)
	}
	for _, d := range append([]*driverUnder{r.target}, r.extra...) {
		if r.sched.Procs {
			for _, cls := range d.classes {
				p, err := startProcess(r.sock, cls, d.call, d.name+"-app0", func(p *process) { r.addApp(d.name, p) })
				if err != nil {
					return err
				}
				if p != nil {
					if p.direct {
						r.omu.Lock()
						r.direct++
						r.omu.Unlock()
					}
					break
				}
			}
		} else {
			r.attachApp(d, 0)
		}
		r.attachApp(d, 1)
	}
	return nil
}

func (r *Trial) addApp(name string, a app) {
	r.amu.Lock()
	r.apps[name] = append(r.apps[name], a)
	r.amu.Unlock()
}

func (r *Trial) attachApp(d *driverUnder, i int) {
	prov, release, ok := r.instanceOf(d.classes)
	if !ok {
		return
	}
	defer release()
	c := &embedded{r: r, prov: prov, call: d.call, done: make(chan struct{}), label: fmt.Sprintf("%s-app%d", d.name, i)}
	// Held for the application's life: a termination racing the attach
	// must not free the client under the Open below or a later kill.
	svc, err := r.reg.AttachClientHeld(prov, "VerifyApp", c.label, driver.Properties{}, c, c)
	if err != nil {
		if !errors.Is(err, driver.ErrNotActive) && !errors.Is(err, driver.ErrClosed) {
			r.Violate(Problem{Kind: "setup", Text: "attach application: " + err.Error()})
		}
		return
	}
	c.svc = svc
	if err := prov.Open(svc, driver.OpenOptions{}); err != nil && !errors.Is(err, driver.ErrNotActive) {
		r.note("open: %v", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	r.addApp(d.name, c)
	go c.io(cctx)
}

// arm adds the observers and the schedule's faults to in.
func (r *Trial) arm(in *faultinject.Injector) error {
	r.observe(in)
	for _, f := range r.sched.Faults {
		k, ok := lookupFault(f.Kind)
		if !ok {
			return fmt.Errorf("unknown fault kind %q", f.Kind)
		}
		f := f
		label := f.String()
		var act faultinject.Action
		switch {
		case f.Kind == "block":
			g := faultinject.NewGate()
			r.gates.mu.Lock()
			r.gates.gs = append(r.gates.gs, g)
			r.gates.mu.Unlock()
			r.async.add()
			go func() {
				defer r.async.done()
				select {
				case <-g.Reached():
					r.block(f.Op)
				case <-r.pumpEnd:
				}
				g.Release()
			}()
			act = faultinject.Block(g)
		default:
			act = faultinject.Hook(func(s faultinject.Site) error {
				r.omu.Lock()
				r.faultSeen = append(r.faultSeen, label)
				r.omu.Unlock()
				return k.Inject(r, siteOf(s), f)
			})
		}
		match := r.faultMatch
		if f.Step.InDriver() {
			match = r.driverMatch
		}
		if err := in.Add(faultinject.Rule{Point: f.Step.point(), Skip: f.Skip, Match: match, Action: act.Labeled(label)}); err != nil {
			return fmt.Errorf("fault %s: %w", f, err)
		}
	}
	if r.sched.Jitter > 0 {
		var jmu sync.Mutex
		rng := rand.New(rand.NewPCG(r.sched.Seed, 0x717e4))
		for _, st := range r.steps() {
			in.MustAdd(faultinject.Rule{Point: st.point(), Times: -1,
				Match: func(faultinject.Site) bool {
					jmu.Lock()
					defer jmu.Unlock()
					return rng.Float64() < r.sched.Jitter
				},
				Action: faultinject.Do(func(faultinject.Site) {
					jmu.Lock()
					d := time.Duration(rng.IntN(300)) * time.Microsecond
					jmu.Unlock()
					time.Sleep(d)
				}).Labeled("jitter")})
		}
	}
	return nil
}

// faultMatch: faults fire at the sites of this run's services only (a
// leftover of an earlier run must not take them).
func (r *Trial) faultMatch(s faultinject.Site) bool {
	switch t := s.Target.(type) {
	case *driver.Service:
		return t.Registry() == r.reg
	case driver.JobSite:
		return t.Svc.Registry() == r.reg
	}
	return true
}

// driverMatch: at a step that runs driver code, faults fire at the
// verified drivers' instances (not at a nub's or an application's Stop).
func (r *Trial) driverMatch(s faultinject.Site) bool {
	if !r.faultMatch(s) {
		return false
	}
	var svc *driver.Service
	switch t := s.Target.(type) {
	case *driver.Service:
		svc = t
	case driver.JobSite:
		svc = t.Svc
	}
	if svc == nil || svc.Personality() == nil {
		return false
	}
	name := svc.Personality().Name
	for _, d := range append([]*driverUnder{r.target}, r.extra...) {
		if d.name == name {
			return true
		}
	}
	return false
}

func (r *Trial) steps() []Step {
	var out []Step
	for _, s := range Steps() {
		if s.socket() && !r.sched.Procs {
			continue
		}
		out = append(out, s)
	}
	return out
}

func siteOf(s faultinject.Site) Site {
	out := Site{Step: Step(s.Point.String())}
	switch t := s.Target.(type) {
	case *driver.Service:
		out.Service = t
	case driver.JobSite:
		out.Service = t.Svc
		out.Job = &t
	}
	return out
}

// observe adds rules that never fire: their Match keeps the books the
// checks read (stopped and freed services, jobs submitted and freed) and
// catches a call into a service after its Stop or free as it happens.
func (r *Trial) observe(in *faultinject.Injector) {
	for _, p := range faultinject.Points() {
		in.MustAdd(faultinject.Rule{Point: p, Times: -1, Action: faultinject.Delay(0), Match: func(s faultinject.Site) bool {
			r.omu.Lock()
			defer r.omu.Unlock()
			switch t := s.Target.(type) {
			case *driver.Service:
				if t.Registry() != r.reg {
					return false
				}
				id := t.ID()
				if r.freed[id] {
					r.problems = append(r.problems, Problem{Kind: "use-after-free", Text: fmt.Sprintf("%s reached at %s after its free", t, p), Stack: stackNow()})
				}
				switch p {
				case faultinject.Stop:
					if r.stopped[id] {
						r.problems = append(r.problems, Problem{Kind: "contract", Text: fmt.Sprintf("%s: Stop twice", t)})
					}
					r.stopped[id] = true
				case faultinject.Start, faultinject.Call, faultinject.Job, faultinject.WillTerminate, faultinject.DidTerminate, faultinject.Probe:
					if r.stopped[id] {
						r.problems = append(r.problems, Problem{Kind: "contract", Text: fmt.Sprintf("%s: %s after its Stop", t, p), Stack: stackNow()})
					}
				case faultinject.Free:
					r.freed[id] = true
				}
			case driver.JobSite:
				if t.Svc.Registry() != r.reg {
					return false
				}
				switch p {
				case faultinject.Submit:
					r.jobs[t.Num] = 0
					r.jobOf[t.Num] = t.Name()
					if r.freed[t.Svc.ID()] {
						r.problems = append(r.problems, Problem{Kind: "use-after-free", Text: fmt.Sprintf("job submitted to %s after its free", t.Svc), Stack: stackNow()})
					}
				case faultinject.JobFree:
					r.jobs[t.Num]++
				}
			}
			return false
		}})
	}
}
