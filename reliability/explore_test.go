package reliability

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient/server"
)

var (
	flagSeed    = flag.Uint64("explore.seed", 0, "replay this random scenario seed only (printed by a failing run)")
	flagN       = flag.Int("explore.n", defaultRandomRuns, "random scenarios to run")
	flagFirst   = flag.Uint64("explore.first", 1, "seed of the first random scenario")
	flagTimeout = flag.Duration("explore.deadline", 60*time.Second, "watchdog: a run taking longer is a deadlock")
	flagVerbose = flag.Bool("explore.v", false, "log every run")
)

func TestMain(m *testing.M) {
	if sock := os.Getenv(envChild); sock != "" {
		os.Exit(childMain(sock, os.Getenv(envClass)))
	}
	leaktest.Main(m)
}

// Fault kinds: what happens at a step.
const (
	faultKill   = "kill"   // a client crashes
	faultUnplug = "unplug" // the device is pulled
	faultUnload = "unload" // the driver at the step (else vendord) is unloaded
	faultPanic  = "panic"  // the driver panics
	faultHang   = "hang"   // a job hangs past its deadline
	faultFail   = "fail"   // the step fails
	faultBlock  = "block"  // the step blocks while a random operation runs (random runs only)
)

var enumKinds = []string{faultKill, faultUnplug, faultUnload, faultPanic, faultHang, faultFail}

// hangFor is how long a hanging job ignores its cancellation: longer than
// the deadline terminateSync gives it, shorter than the watchdog.
const hangFor = 60 * time.Millisecond

// lifecyclePoints are the points this topology reaches: the socket points
// only with application processes.
func lifecyclePoints(procs bool) []faultinject.Point {
	var out []faultinject.Point
	for _, p := range faultinject.Points() {
		switch p {
		case faultinject.Handshake, faultinject.Read, faultinject.Write:
			if !procs {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

func validPair(p faultinject.Point, kind string) bool {
	switch kind {
	case faultPanic:
		return p.CanPanic()
	case faultFail:
		return p.CanFail()
	}
	return true
}

type plannedFault struct {
	Point faultinject.Point
	Kind  string
	Skip  int
	Op    string // for block: what runs while the step is held
}

func (f plannedFault) String() string {
	s := f.Kind + "@" + f.Point.String()
	if f.Skip > 0 {
		s += fmt.Sprintf("+%d", f.Skip)
	}
	if f.Op != "" {
		s += "(" + f.Op + ")"
	}
	return s
}

// scenario is one run's plan.
type scenario struct {
	Seed     uint64 // random scenarios: replay with -explore.seed
	Faults   []plannedFault
	Jitter   float64 // share of sites delayed by up to 300µs
	IO       time.Duration
	Teardown []string
	Procs    bool // client 0 of each driver is an application process
	// MustFire: every planned fault must be reached (enumeration).
	MustFire bool
	// IOUntil, if set, ends the I/O phase when it is closed (at the latest
	// after ioUntilMax) instead of after IO: for a run that must reach a
	// state, however loaded the machine.
	IOUntil <-chan struct{}
}

const ioUntilMax = 30 * time.Second

func (sc scenario) String() string {
	var fs []string
	for _, f := range sc.Faults {
		fs = append(fs, f.String())
	}
	s := fmt.Sprintf("faults=[%s] teardown=[%s] io=%v", strings.Join(fs, " "), strings.Join(sc.Teardown, " "), sc.IO)
	if sc.Jitter > 0 {
		s += fmt.Sprintf(" jitter=%.2f", sc.Jitter)
	}
	if sc.Procs {
		s += " procs"
	}
	if sc.Seed != 0 {
		s = fmt.Sprintf("seed=%d %s", sc.Seed, s)
	}
	return s
}

var teardownOps = []string{"kill0", "quit1", "unload-vendord", "unload-usbstorage", "unplug", "tsync-vendord", "tsync-usbstorage"}

var defaultTeardown = []string{"kill0", "tsync-vendord", "unplug"}

// randomScenario derives a plan from seed.
func randomScenario(seed uint64) scenario {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	sc := scenario{Seed: seed, IO: time.Duration(rng.IntN(2000)) * time.Microsecond, Procs: rng.IntN(4) == 0}
	points := lifecyclePoints(sc.Procs)
	kinds := append(append([]string(nil), enumKinds...), faultBlock)
	for range rng.IntN(4) {
		p := points[rng.IntN(len(points))]
		k := kinds[rng.IntN(len(kinds))]
		if !validPair(p, k) {
			k = faultUnplug
		}
		f := plannedFault{Point: p, Kind: k, Skip: rng.IntN(3)}
		if k == faultBlock {
			f.Op = []string{"kill0", "unplug", "unload-vendord", "unload-usbstorage"}[rng.IntN(4)]
		}
		sc.Faults = append(sc.Faults, f)
	}
	if rng.IntN(2) == 0 {
		sc.Jitter = 0.05 + rng.Float64()*0.3
	}
	ops := append([]string(nil), teardownOps...)
	rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	sc.Teardown = ops[:1+rng.IntN(len(ops))]
	return sc
}

// result is what one run did.
type result struct {
	fired map[string]uint64 // fault kinds fired
	notes []string
}

// stats accumulates over runs for the summary table.
type stats struct {
	mu       sync.Mutex
	runs     int
	failures int
	fired    map[string]uint64
	points   map[string]uint64
	notes    int
	elapsed  time.Duration
}

func (st *stats) add(r result, err error, d time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.fired == nil {
		st.fired, st.points = map[string]uint64{}, map[string]uint64{}
	}
	st.runs++
	st.elapsed += d
	if err != nil {
		st.failures++
	}
	for k, v := range r.fired {
		kind, point, _ := strings.Cut(k, "@")
		st.fired[kind] += v
		if kind != "jitter" {
			st.points[point] += v
		}
	}
	st.notes += len(r.notes)
}

func (st *stats) table(title string) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %s (%s, race=%v)\n", title, runtime.Version(), raceEnabled)
	fmt.Fprintf(&b, "%-28s %10d\n", "runs", st.runs)
	fmt.Fprintf(&b, "%-28s %10d\n", "failures", st.failures)
	if st.runs > 0 {
		fmt.Fprintf(&b, "%-28s %10s\n", "mean run", (st.elapsed / time.Duration(st.runs)).Round(time.Microsecond))
	}
	fmt.Fprintf(&b, "%-28s %10d\n", "blocked deadlines reported", st.notes)
	keys := func(m map[string]uint64) []string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return ks
	}
	b.WriteString("faults injected, by kind:\n")
	for _, k := range keys(st.fired) {
		fmt.Fprintf(&b, "  %-26s %10d\n", k, st.fired[k])
	}
	b.WriteString("faults injected, by step:\n")
	for _, k := range keys(st.points) {
		fmt.Fprintf(&b, "  %-26s %10d\n", k, st.points[k])
	}
	return b.String()
}

// stuck is the gate of the self-test's "stuck" fault; abandoned receives
// the outcome of a run the watchdog gave up on, once it ends.
var (
	stuck     *faultinject.Gate
	abandoned = make(chan error, 1)
)

// run executes sc under the watchdog.
func run(sc scenario) (result, error) {
	type out struct {
		r   result
		err error
	}
	ch := make(chan out, 1)
	var wp atomic.Pointer[world]
	var gates gateSet
	go func() {
		r, err := runScenario(sc, &wp, &gates)
		ch <- out{r, err}
	}()
	t := time.NewTimer(*flagTimeout)
	defer t.Stop()
	select {
	case o := <-ch:
		return o.r, o.err
	case <-t.C:
	}
	// Deadlock: say what blocks, then let go of everything we hold.
	var b strings.Builder
	fmt.Fprintf(&b, "watchdog: run overstayed %v: %s\n", *flagTimeout, sc)
	if w := wp.Load(); w != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := w.reg.WaitQuiet(ctx); err != nil {
			fmt.Fprintf(&b, "WaitQuiet blockers:\n%v\n", err)
		}
		for _, s := range w.reg.Services() {
			if bl := s.Blockers(); len(bl) > 0 {
				fmt.Fprintf(&b, "%s: %+v\n", s, bl)
			}
		}
	}
	// All of it: a dump cut at a fixed size can miss the one goroutine
	// that blocks (seen under make test's load).
	buf := make([]byte, 1<<22)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	fmt.Fprintf(&b, "goroutines:\n%s", buf)
	gates.releaseAll()
	go func() {
		o := <-ch
		select {
		case abandoned <- o.err:
		default:
		}
	}()
	return result{}, errors.New(b.String())
}

type gateSet struct {
	mu sync.Mutex
	gs []*faultinject.Gate
}

func (g *gateSet) add(x *faultinject.Gate) { g.mu.Lock(); g.gs = append(g.gs, x); g.mu.Unlock() }

func (g *gateSet) releaseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, x := range g.gs {
		x.Release()
	}
}

// spawn runs f on its own goroutine (a fault's action must not wait for
// the lifecycle to move past the step that triggered it) and gives it a
// moment to act while the step is still in progress.
func (w *world) spawn(f func()) {
	w.async.Add(1)
	done := make(chan struct{})
	go func() {
		defer w.async.Done()
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

func (w *world) op(name string) {
	switch name {
	case "kill0":
		if c := w.liveClient(0); c != nil {
			c.kill()
		}
	case "quit1":
		if c := w.liveClient(1); c != nil {
			c.quit()
		}
	case "unload-vendord":
		w.unload(vendorName, 10*time.Second)
	case "unload-usbstorage":
		w.unload(usbstorage.Name, 10*time.Second)
	case "unplug":
		w.unplug()
	case "tsync-vendord":
		w.terminateSync(vendorClass, hangFor/4)
	case "tsync-usbstorage":
		w.terminateSync(usbstorage.Class, hangFor/4)
	default:
		panic("unknown op " + name)
	}
}

// hangJob submits to the vendor driver a job that ignores its
// cancellation for hangFor.
func (w *world) hangJob() bool {
	s, release, ok := w.instance(vendorClass)
	if !ok {
		return false
	}
	defer release()
	w.jobsSubmitted.Add(1)
	w.hangs.Add(1)
	return nil == s.Submit(driver.Job{Key: "hang", Run: func(context.Context) error {
		time.Sleep(hangFor)
		return nil
	}, Free: func() { w.jobsFreed.Add(1) }})
}

func driverName(t faultinject.Target) string {
	if s, ok := t.(*driver.Service); ok && s.Personality() != nil {
		return s.Personality().Name
	}
	return vendorName
}

func (w *world) action(f plannedFault, gates *gateSet) faultinject.Action {
	label := f.Kind + "@" + f.Point.String()
	switch f.Kind {
	case faultKill:
		return faultinject.Do(func(faultinject.Site) { w.spawn(func() { w.op("kill0") }) }).Labeled(label)
	case faultUnplug:
		return faultinject.Do(func(faultinject.Site) { w.spawn(w.unplug) }).Labeled(label)
	case faultUnload:
		return faultinject.Do(func(s faultinject.Site) {
			name := driverName(s.Target)
			w.spawn(func() { w.unload(name, 10*time.Second) })
		}).Labeled(label)
	case faultPanic:
		return faultinject.Panic("injected driver panic at " + f.Point.String()).Labeled(label)
	case faultFail:
		return faultinject.Fail(errors.New(f.Point.String())).Labeled(label)
	case faultHang:
		if f.Point == faultinject.Job {
			w.hangs.Add(1)
			return faultinject.Delay(hangFor).Labeled(label)
		}
		// A job of a live vendord hangs; once nothing can take a job
		// any more, the step itself hangs.
		return faultinject.Do(func(faultinject.Site) {
			if !w.hangJob() {
				time.Sleep(hangFor)
			}
		}).Labeled(label)
	case "stuck": // self-test: a step that never returns until the watchdog
		gates.add(stuck)
		return faultinject.Block(stuck).Labeled(label)
	case faultBlock:
		g := faultinject.NewGate()
		gates.add(g)
		w.async.Add(1)
		go func() {
			defer w.async.Done()
			select {
			case <-g.Reached():
				w.spawn(func() { w.op(f.Op) })
				time.Sleep(500 * time.Microsecond)
			case <-w.pumpEnd:
			}
			g.Release()
		}()
		return faultinject.Block(g).Labeled(label)
	}
	panic("unknown fault " + f.Kind)
}

func liveObjects() map[uint64]bool {
	m := map[uint64]bool{}
	for _, o := range refcount.LiveObjects() {
		m[o.ID()] = true
	}
	return m
}

func runScenario(sc scenario, wp *atomic.Pointer[world], gates *gateSet) (result, error) {
	return runScenarioWith(sc, wp, gates, nil)
}

// runScenarioWith is runScenario with in (nil: a new injector) carrying
// extra rules of the caller.
func runScenarioWith(sc scenario, wp *atomic.Pointer[world], gates *gateSet, in *faultinject.Injector) (res result, err error) {
	before := liveObjects()
	g0 := runtime.NumGoroutine()
	w, err := newWorld(sc.Procs)
	if w != nil {
		wp.Store(w)
	}
	if err != nil {
		return res, err
	}
	if in == nil {
		in = faultinject.New()
	}
	for _, f := range sc.Faults {
		if err := in.Add(faultinject.Rule{Point: f.Point, Skip: f.Skip, Action: w.action(f, gates)}); err != nil {
			return res, err
		}
	}
	if sc.Jitter > 0 {
		var jmu sync.Mutex
		rng := rand.New(rand.NewPCG(sc.Seed, 0x717e4))
		for _, p := range lifecyclePoints(sc.Procs) {
			in.MustAdd(faultinject.Rule{Point: p, Times: -1,
				Match: func(faultinject.Site) bool {
					jmu.Lock()
					defer jmu.Unlock()
					return rng.Float64() < sc.Jitter
				},
				Action: faultinject.Do(func(faultinject.Site) {
					jmu.Lock()
					d := time.Duration(rng.IntN(300)) * time.Microsecond
					jmu.Unlock()
					time.Sleep(d)
				}).Labeled("jitter@" + p.String())})
		}
	}
	uninstall, err := in.Install()
	if err != nil {
		return res, err
	}
	defer func() {
		uninstall()
		st := in.Stats()
		res.fired = st.Fired
		w.vmu.Lock()
		res.notes = w.notes
		w.vmu.Unlock()
		if err == nil && sc.MustFire {
			for _, f := range sc.Faults {
				if st.Fired[f.Kind+"@"+f.Point.String()] == 0 {
					err = fmt.Errorf("fault %s never fired: the topology no longer reaches %s", f, f.Point)
				}
			}
		}
	}()

	ctx := context.Background()
	if err := w.up(ctx); err != nil {
		return res, err
	}
	if sc.IOUntil != nil {
		select {
		case <-sc.IOUntil:
		case <-time.After(ioUntilMax):
		}
	} else {
		time.Sleep(sc.IO)
	}
	for _, op := range sc.Teardown {
		w.op(op)
	}
	w.cmu.Lock()
	clients := append([]member(nil), w.clients...)
	w.cmu.Unlock()
	for _, c := range clients {
		c.stop()
	}
	qctx, cancel := context.WithTimeout(ctx, *flagTimeout/2)
	defer cancel()
	if err := w.reg.WaitQuiet(qctx); err != nil {
		w.violate("WaitQuiet: %v", err)
	}
	if w.srv != nil {
		if err := w.srv.Close(); err != nil {
			w.violate("userclient server Close: %v", err)
		}
	}
	w.closing.Store(true)
	w.sim.Close()
	<-w.pumpEnd
	w.bridge.Close()
	cctx, ccancel := context.WithTimeout(ctx, *flagTimeout/2)
	defer ccancel()
	if err := w.reg.Close(cctx); err != nil {
		w.violate("registry Close: %v", err)
	}
	gates.releaseAll()
	w.async.Wait()
	uninstall()
	return res, w.verify(before, g0)
}

// verify is the end-of-run check: trace, driver-side violations, jobs,
// USB handles and kernel drivers, objects, goroutines.
func (w *world) verify(before map[uint64]bool, g0 int) error {
	defer os.RemoveAll(w.dir)
	w.unsub()
	var problems []string
	w.evMu.Lock()
	evs := w.events
	w.evMu.Unlock()
	if err := lifecycletest.Validate(evs, true); err != nil {
		problems = append(problems, "lifecycle trace: "+err.Error())
	}
	w.vmu.Lock()
	problems = append(problems, w.violations...)
	w.vmu.Unlock()
	if s, f := w.jobsSubmitted.Load(), w.jobsFreed.Load(); s != f {
		problems = append(problems, fmt.Sprintf("jobs: %d submitted, %d freed", s, f))
	}
	if n := w.backend.OpenHandles(); n != 0 {
		problems = append(problems, fmt.Sprintf("%d USB handle(s) left open", n))
	}
	if !w.stick.Gone() {
		if k := w.stick.KernelDriver(0); k != "usb-storage" {
			problems = append(problems, fmt.Sprintf("kernel driver of interface 0 is %q, want usb-storage re-attached", k))
		}
	}
	_ = w.backend.Close()
	var leaked []*refcount.Object
	for _, o := range refcount.LiveObjects() {
		if !before[o.ID()] {
			leaked = append(leaked, o)
		}
	}
	if len(leaked) > 0 {
		var b strings.Builder
		_ = refcount.NewReport(leaked).WriteText(&b)
		problems = append(problems, fmt.Sprintf("%d object(s) outlive the run:\n%s", len(leaked), b.String()))
	}
	deadline := time.Now().Add(*flagTimeout / 12)
	for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > g0 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		problems = append(problems, fmt.Sprintf("%d goroutine(s) outlive the run (%d before):\n%s", n-g0, g0, buf))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

func report(t *testing.T, sc scenario, err error) {
	t.Helper()
	replay := ""
	if sc.Seed != 0 {
		replay = fmt.Sprintf("\nreplay: go test ./reliability -run TestExploreRandom -explore.seed=%d", sc.Seed)
	}
	t.Errorf("scenario %s failed:%s\n%v", sc, replay, err)
}

// TestExploreBaseline runs the topology without faults and checks that it
// is what the explorer claims: both drivers started, the kernel driver
// detached while usbstorage runs, jobs queued and running, I/O succeeding.
func TestExploreBaseline(t *testing.T) {
	var wp atomic.Pointer[world]
	var gates gateSet
	probe := faultinject.New()
	var mid struct {
		kernel       string
		queued, runs int
		clients      int
		instance     string
		services     []string
	}
	lookDone := make(chan struct{})
	// Look at the topology mid-run: at the first call made once every
	// client is attached (the out-of-process one can attach well after
	// the others have made many calls on a loaded machine), from the 21st
	// call on so that the jobs have started.
	// Clients call concurrently: one look at a time (midMu), once.
	var looked atomic.Bool
	var midMu sync.Mutex
	tries := 0 // guarded by midMu
	probe.MustAdd(faultinject.Rule{Point: faultinject.Call, Skip: 20, Times: -1, Action: faultinject.Do(func(faultinject.Site) {
		if looked.Load() {
			return
		}
		midMu.Lock()
		defer midMu.Unlock()
		if looked.Load() {
			return
		}
		w := wp.Load()
		w.cmu.Lock()
		clients := len(w.clients)
		w.cmu.Unlock()
		if clients > mid.clients {
			mid.clients = clients
		}
		if clients < 4 {
			return
		}
		// The jobs may still be starting at this call on a loaded
		// machine: look again at later calls, up to a bound, before
		// taking what is there.
		if s, release, ok := w.instance(vendorClass); ok {
			queued, runs := s.Jobs()
			release()
			if (runs < 4 || queued < 2) && tries < 500 {
				tries++
				return
			}
		}
		looked.Store(true)
		defer close(lookDone)
		mid.kernel = w.stick.KernelDriver(0)
		if s, release, ok := w.instance(vendorClass); ok {
			mid.queued, mid.runs = s.Jobs()
			mid.instance = fmt.Sprintf("%s %+v", s, s.State())
			release()
		}
		for _, s := range w.reg.Services() {
			mid.services = append(mid.services, fmt.Sprintf("%s %+v", s, s.State()))
		}
	}).Labeled("look@call")})
	sc := scenario{IOUntil: lookDone, Teardown: defaultTeardown}
	res, err := runScenarioWith(sc, &wp, &gates, probe)
	must(t, err == nil, "baseline: %v", err)
	midMu.Lock() // the scenario is over; the lock orders the last look before these reads
	defer midMu.Unlock()
	w := wp.Load()
	must(t, res.fired["look@call"] >= 1, "clients made fewer than 21 calls")
	must(t, looked.Load(), "never saw all 4 clients attached at once (at most %d)", mid.clients)
	must(t, mid.kernel == "usbfs", "usbstorage holds interface 0 (kernel driver %q)", mid.kernel)
	must(t, mid.clients == 4, "4 clients attached, got %d", mid.clients)
	must(t, mid.runs == 4 && mid.queued >= 2, "vendord has 4 running and ≥2 queued jobs, got %d/%d; instance %s; registry:\n%s",
		mid.runs, mid.queued, mid.instance, strings.Join(mid.services, "\n"))
	must(t, w.calls.Load() > w.callErrs.Load(), "calls succeed: %d calls, %d errors", w.calls.Load(), w.callErrs.Load())
	must(t, w.jobsSubmitted.Load() >= startJobs, "jobs submitted")
}

func must(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Fatalf(format, args...)
	}
}

// TestExploreFaults injects every fault kind at every lifecycle step of
// the topology, one pair per run, each fault at the step's first site.
func TestExploreFaults(t *testing.T) {
	if *flagSeed != 0 {
		t.Skip("replaying one seed")
	}
	var st stats
	for _, p := range lifecyclePoints(true) {
		for _, k := range enumKinds {
			if !validPair(p, k) {
				continue
			}
			sc := scenario{Faults: []plannedFault{{Point: p, Kind: k}}, IO: time.Millisecond, Teardown: defaultTeardown, MustFire: true, Procs: true}
			start := time.Now()
			res, err := run(sc)
			st.add(res, err, time.Since(start))
			if *flagVerbose {
				t.Logf("%s: %v notes=%q", sc, err, res.notes)
			}
			if err != nil {
				report(t, sc, err)
				if strings.HasPrefix(err.Error(), "watchdog") {
					t.FailNow()
				}
			}
		}
	}
	t.Log(st.table("fault × step enumeration"))
}

// TestExploreRandom runs -explore.n random scenarios from seed
// -explore.first (or only -explore.seed) and prints the summary table.
func TestExploreRandom(t *testing.T) {
	var st stats
	seeds := make([]uint64, 0, *flagN)
	if *flagSeed != 0 {
		seeds = append(seeds, *flagSeed)
	} else {
		for i := range *flagN {
			seeds = append(seeds, *flagFirst+uint64(i))
		}
	}
	failed := 0
	for _, seed := range seeds {
		sc := randomScenario(seed)
		start := time.Now()
		res, err := run(sc)
		st.add(res, err, time.Since(start))
		if *flagVerbose {
			t.Logf("%s: %v notes=%q", sc, err, res.notes)
		}
		if err != nil {
			report(t, sc, err)
			failed++
			if failed >= 5 || strings.HasPrefix(err.Error(), "watchdog") {
				t.FailNow()
			}
		}
	}
	table := st.table(fmt.Sprintf("random scenarios, seeds %d..%d", seeds[0], seeds[len(seeds)-1]))
	t.Log(table)
}

// TestExploreBaselineProcs: with application processes, both drivers are
// opened through the socket, kill0 SIGKILLs the usbstorage application,
// and its user client goes all the way to free.
func TestExploreBaselineProcs(t *testing.T) {
	var wp atomic.Pointer[world]
	var gates gateSet
	sc := scenario{IO: 5 * time.Millisecond, Teardown: []string{"kill0"}, Procs: true}
	_, err := runScenarioWith(sc, &wp, &gates, nil)
	must(t, err == nil, "baseline: %v", err)
	w := wp.Load()
	steps := map[string]int{}
	for _, e := range w.events {
		if e.Class == server.UserClientClass {
			steps[e.Step.String()]++
		}
	}
	must(t, steps["attach"] == 2 && steps["free"] == 2, "two user clients attached and freed, got %v", steps)
	w.cmu.Lock()
	defer w.cmu.Unlock()
	p, ok := w.clients[0].(*procClient)
	must(t, ok, "client 0 is a process")
	ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	must(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the application was SIGKILLed: %v", p.cmd.ProcessState)
}
