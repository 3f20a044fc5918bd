package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/host/wire"
)

// Defaults of the manifests that set no timeouts.
const (
	DefaultStartTimeout = 10 * time.Second
	DefaultStopTimeout  = 5 * time.Second
)

var (
	// ErrDisabled: the bundle crashed too often and is disabled.
	ErrDisabled = errors.New("disabled after repeated crashes")
	// ErrCrashed: the driver process exited, was killed or broke the
	// protocol.
	ErrCrashed = errors.New("driver crashed")
	// ErrTimeout: the driver process did not answer in time and was
	// killed.
	ErrTimeout = errors.New("driver process did not answer in time")
	// ErrTooLarge: a call's input or output is over the manifest's
	// max_input or max_output.
	ErrTooLarge = errors.New("over the manifest's limit")
	// ErrNoProcess: the instance has no driver process (not started yet,
	// or stopped).
	ErrNoProcess = errors.New("no driver process")
)

// OpError is the error of a host operation on a driver: Op ("spawn",
// "handshake", "start", "call", "stop", …), the Driver (bundle name), the
// PID of its process (0: none yet), and the cause. Its message is
// "op driver[pid]: cause".
type OpError struct {
	Op     string
	Driver string
	PID    int
	Err    error
}

func (e *OpError) Error() string {
	if e.PID == 0 {
		return e.Op + " " + e.Driver + ": " + e.Err.Error()
	}
	return fmt.Sprintf("%s %s[%d]: %s", e.Op, e.Driver, e.PID, e.Err.Error())
}

func (e *OpError) Unwrap() error { return e.Err }

// Config is what a Host needs from the daemon.
type Config struct {
	// Registry is the daemon's registry (matching runs again on a crashed
	// instance's nub; a disabled bundle's personalities are unregistered).
	Registry *driver.Registry
	// Resources are the daemon's, from which devgrant opens devices.
	Resources *drivertable.Resources
	// Log gets the hosts's events and the driver processes' output.
	Log *slog.Logger
	// Disabled, when set, is called after a bundle was disabled and its
	// personalities unregistered: what follows the loaded personalities
	// (the daemon's USB hold) follows this change too.
	Disabled func(driver string)
	// TraceDrivers asks every driver process, at the hello, to trace its
	// references and report what its code left alive at stop (a leaks
	// message, protocol 1.1): the Driver Verifier's mode. DriverLeaks
	// returns the reports.
	TraceDrivers bool
	// Spawned, when set, hears the pid of every driver process started
	// (the verifier checks that none outlives its run, nor its group).
	Spawned func(driver string, pid int)
}

// Host runs the instances of bundles' drivers in processes.
type Host struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	bundles  map[string]*bundleState
	closed   bool
	wg       sync.WaitGroup // relaunch waits
	relaunch map[uint64]int // nub id → relaunches waiting (backoff, then Rematch)
}

// New returns a host for cfg.Registry.
func New(cfg Config) *Host {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Resources == nil {
		cfg.Resources = drivertable.NewResources()
	}
	return &Host{cfg: cfg, log: log, bundles: map[string]*bundleState{}}
}

// Relaunching reports whether a crashed driver's instance on nub is to be
// relaunched: matching runs on the nub again once the crashed instance is
// gone and the backoff has passed, and it reports true until that matching
// has attached the new instance (or the relaunch was given up: the driver
// disabled meanwhile, the host closed). The USB hold keeps such a nub's
// interface from the kernel meanwhile (usbhold.Config.Relaunching).
func (h *Host) Relaunching(nub *driver.Service) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.relaunch[nub.ID()] > 0
}

// Entry is m's driver-table entry whose instances run in processes of this
// host. It replaces the host's state of an earlier bundle of that name
// (crash counts start again).
func (h *Host) Entry(m *bundle.Manifest) drivertable.Entry {
	b := h.bundle(m)
	return m.Entry(func() driver.Driver { return newProxy(b) })
}

func (h *Host) bundle(m *bundle.Manifest) *bundleState {
	ctx, cancel := context.WithCancel(context.Background())
	b := &bundleState{h: h, m: m, ctx: ctx, cancel: cancel, procs: map[*proxy]int{}, methods: map[string]bundle.Method{}}
	for _, mt := range m.Methods {
		b.methods[mt.Name] = mt
	}
	h.mu.Lock()
	if old := h.bundles[m.Name]; old != nil {
		old.cancel()
	}
	h.bundles[m.Name] = b
	h.mu.Unlock()
	return b
}

// Forget drops what the host knows of a bundle that was unloaded: pending
// relaunches are cancelled. Instances still terminating finish as usual.
func (h *Host) Forget(name string) {
	h.mu.Lock()
	b := h.bundles[name]
	delete(h.bundles, name)
	h.mu.Unlock()
	if b != nil {
		b.cancel()
	}
}

// Close cancels every pending relaunch and waits for them. The processes
// belong to instances: closing the registry stops them.
func (h *Host) Close() {
	h.mu.Lock()
	h.closed = true
	bs := make([]*bundleState, 0, len(h.bundles))
	for _, b := range h.bundles {
		bs = append(bs, b)
	}
	h.mu.Unlock()
	for _, b := range bs {
		b.cancel()
	}
	h.wg.Wait()
}

// Status is what the host knows of a bundle's driver, for drvctl drivers.
type Status struct {
	// Disabled says why the bundle is disabled ("" if it is not).
	Disabled string
	// Crashes within the restart window, and since it was loaded.
	Crashes, TotalCrashes int
	// LastError is the last crash, refused start or kill.
	LastError string
	// PIDs are the driver's live processes.
	PIDs []int
}

// Status returns the state of bundle name; false if the host has none.
func (h *Host) Status(name string) (Status, bool) {
	b := h.loaded(name)
	if b == nil {
		return Status{}, false
	}
	return b.status(), true
}

// KillDriver sends SIGKILL to the process that runs the instance s, as a
// kill from outside would (the Driver Verifier's driver-kill fault): what
// follows is the host's crash handling. ErrNoProcess if s has none (not
// spawned yet, or reaped).
func (h *Host) KillDriver(s *driver.Service) error {
	h.mu.Lock()
	bs := make([]*bundleState, 0, len(h.bundles))
	for _, b := range h.bundles {
		bs = append(bs, b)
	}
	h.mu.Unlock()
	for _, b := range bs {
		b.mu.Lock()
		var proc *process
		for p := range b.procs {
			if p.s == s { // p.s was set before addProc took b.mu
				proc = p.proc
			}
		}
		b.mu.Unlock()
		if proc == nil {
			continue
		}
		if err := proc.sigkill(); err != nil {
			if errors.Is(err, os.ErrProcessDone) {
				return &OpError{Op: "kill", Driver: b.m.Name, PID: proc.pid, Err: ErrNoProcess}
			}
			return &OpError{Op: "kill", Driver: b.m.Name, PID: proc.pid, Err: err}
		}
		return nil
	}
	return &OpError{Op: "kill", Driver: s.String(), Err: ErrNoProcess}
}

// LeakReport is what a driver process reported it left alive at stop
// (Config.TraceDrivers).
type LeakReport struct {
	Driver  string
	PID     int
	Service uint64 // the instance, in the daemon's registry
	Leaks   wire.Leaks
}

// loaded is the loaded bundle called name, or nil.
func (h *Host) loaded(name string) *bundleState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bundles[name]
}

// DriverLeaks returns the leak reports the processes of bundle name sent
// since it was loaded.
func (h *Host) DriverLeaks(name string) []LeakReport {
	b := h.loaded(name)
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]LeakReport(nil), b.leaks...)
}

// Counts are a bundle's counters since it was loaded, for metrics.
type Counts struct {
	Driver   string
	Starts   uint64 // processes spawned
	Crashes  uint64
	Disables uint64
}

// Counts returns every loaded bundle's counters, by name.
func (h *Host) Counts() []Counts {
	h.mu.Lock()
	bs := make([]*bundleState, 0, len(h.bundles))
	for _, b := range h.bundles {
		bs = append(bs, b)
	}
	h.mu.Unlock()
	out := make([]Counts, 0, len(bs))
	for _, b := range bs {
		b.mu.Lock()
		out = append(out, Counts{Driver: b.m.Name, Starts: b.starts, Crashes: uint64(b.total), Disables: b.disables})
		b.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Counts) int { return strings.Compare(a.Driver, b.Driver) })
	return out
}

// bundleState is a loaded bundle's crash history and processes.
type bundleState struct {
	h       *Host
	m       *bundle.Manifest
	ctx     context.Context // cancelled when unloaded: no relaunch
	cancel  context.CancelFunc
	methods map[string]bundle.Method

	mu       sync.Mutex
	crashes  []time.Time // within the window
	total    int
	starts   uint64 // processes spawned
	disables uint64
	lastErr  string
	disabled string
	procs    map[*proxy]int
	leaks    []LeakReport
	hangs    []string
}

func (b *bundleState) status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trimLocked(time.Now())
	st := Status{Disabled: b.disabled, Crashes: len(b.crashes), TotalCrashes: b.total, LastError: b.lastErr}
	for _, pid := range b.procs {
		st.PIDs = append(st.PIDs, pid)
	}
	slices.Sort(st.PIDs)
	return st
}

func (b *bundleState) trimLocked(now time.Time) {
	i := 0
	for i < len(b.crashes) && now.Sub(b.crashes[i]) > b.m.Restart.Window {
		i++
	}
	b.crashes = b.crashes[i:]
}

func (b *bundleState) isDisabled() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.disabled
}

func (b *bundleState) setLastErr(err error) {
	b.mu.Lock()
	b.lastErr = err.Error()
	b.mu.Unlock()
}

func (b *bundleState) addProc(p *proxy, pid int) {
	b.mu.Lock()
	b.starts++
	b.procs[p] = pid
	b.mu.Unlock()
	if f := b.h.cfg.Spawned; f != nil {
		f(b.m.Name, pid)
	}
}

// leaked records a driver process's leaks report.
func (b *bundleState) leaked(p *proxy, l *wire.Leaks) {
	r := LeakReport{Driver: b.m.Name, PID: p.pid(), Service: p.s.ID(), Leaks: *l}
	b.mu.Lock()
	if len(b.leaks) < maxLeakReports {
		b.leaks = append(b.leaks, r)
	}
	b.mu.Unlock()
	attrs := []any{"driver", b.m.Name, "pid", r.PID, "objects", l.Objects}
	if l.Culprit != nil {
		attrs = append(attrs, "culprit", fmt.Sprintf("%s %s:%d", l.Culprit.Func, l.Culprit.File, l.Culprit.Line))
	}
	b.h.log.Error("driver process left objects alive at stop", attrs...)
}

// hung records a driver process that had to be killed at its stop.
func (b *bundleState) hung(what string) {
	b.mu.Lock()
	if len(b.hangs) < maxLeakReports {
		b.hangs = append(b.hangs, what)
	}
	b.mu.Unlock()
}

// DriverHangs lists the processes of bundle name that had to be killed
// at their stop since it was loaded: no answer to did_terminate or stop
// within the manifest's stop_timeout, or no exit within 1 s of the stop
// answer (the Driver Verifier reports them).
func (h *Host) DriverHangs(name string) []string {
	b := h.loaded(name)
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.hangs...)
}

// maxLeakReports bounds what a bundle's processes can make the host keep.
const maxLeakReports = 64

func (b *bundleState) removeProc(p *proxy) {
	b.mu.Lock()
	delete(b.procs, p)
	b.mu.Unlock()
}

func (b *bundleState) timeouts() (start, stop time.Duration) {
	start, stop = b.m.StartTimeout, b.m.StopTimeout
	if start == 0 {
		start = DefaultStartTimeout
	}
	if stop == 0 {
		stop = DefaultStopTimeout
	}
	return start, stop
}

type relaunchTag struct{}

func (relaunchTag) String() string { return "driver relaunch" }

// crashed records a crash. If the bundle has crashed max_crashes times
// within its window it is disabled; otherwise, when rematch, matching runs
// again on nub after the backoff, once gone (the crashed instance's Done)
// is closed.
func (b *bundleState) crashed(err error, nub *driver.Service, gone <-chan struct{}, rematch bool) {
	now := time.Now()
	r := b.m.Restart
	b.mu.Lock()
	b.trimLocked(now)
	b.crashes = append(b.crashes, now)
	b.total++
	b.lastErr = err.Error()
	n := len(b.crashes)
	disable := n >= r.MaxCrashes && b.disabled == ""
	if disable {
		b.disabled = fmt.Sprintf("crashed %d times within %v (last: %v)", n, r.Window, err)
		b.disables++
	}
	already := b.disabled != "" && !disable
	b.mu.Unlock()
	log := b.h.log
	if disable {
		log.Error("driver disabled", "driver", b.m.Name, "crashes", n, "window", r.Window, "err", err)
		b.h.cfg.Registry.UnregisterPersonality(b.m.Name)
		if f := b.h.cfg.Disabled; f != nil {
			f(b.m.Name)
		}
		return
	}
	backoff := r.Backoff
	for i := 1; i < n && backoff < r.MaxBackoff; i++ {
		backoff *= 2
	}
	backoff = min(backoff, r.MaxBackoff)
	log.Error("driver crashed", "driver", b.m.Name, "crashes", n, "window", r.Window, "relaunch_in", backoff, "err", err)
	if already || !rematch || nub == nil {
		return
	}
	b.h.mu.Lock()
	if b.h.closed {
		b.h.mu.Unlock()
		return
	}
	b.h.wg.Add(1)
	id := nub.ID()
	if b.h.relaunch == nil {
		b.h.relaunch = map[uint64]int{}
	}
	b.h.relaunch[id]++
	b.h.mu.Unlock()
	nub.TaggedRetain(relaunchTag{})
	go func() {
		defer b.h.wg.Done()
		defer nub.TaggedRelease(relaunchTag{})
		defer func() { // after the Rematch below: the new instance is attached
			b.h.mu.Lock()
			if b.h.relaunch[id]--; b.h.relaunch[id] <= 0 {
				delete(b.h.relaunch, id)
			}
			b.h.mu.Unlock()
		}()
		if gone != nil {
			select {
			case <-gone:
			case <-b.ctx.Done():
				return
			}
		}
		t := time.NewTimer(backoff)
		defer t.Stop()
		select {
		case <-t.C:
		case <-b.ctx.Done():
			return
		}
		if b.isDisabled() == "" {
			b.h.cfg.Registry.Rematch(nub)
		}
	}()
}
