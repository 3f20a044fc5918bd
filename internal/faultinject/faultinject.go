package faultinject

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Point names a step of the lifecycle (or of the user-client socket) where
// faults can be injected.
type Point uint8

const (
	Publish       Point = iota + 1 // Registry.Publish, before the nub is registered (may fail)
	Probe                          // a candidate's Probe callback, before the driver's (may fail or panic)
	Start                          // a driver's Start callback, before the driver's (may fail or panic)
	Open                           // Service.Open, before the open set changes (may fail)
	Call                           // Service.Call, before the method runs (may fail or panic)
	WillTerminate                  // the WillTerminate callback of a driver that has one (may panic)
	DidTerminate                   // the DidTerminate callback of a driver that has one (may panic)
	Stop                           // the Stop callback, every service (may panic)
	Submit                         // Service.Submit, before the job is queued or refused (target: the job)
	Job                            // a job, before its Run (may fail or panic)
	JobFree                        // a job's Free hook, before it runs (target: the job)
	Detach                         // phase 3, before the service detaches from its providers
	Free                           // the last reference went, before the free event
	Handshake                      // userclient/server: a connection's version handshake (may fail)
	Read                           // userclient/server: reading a frame (may fail)
	Write                          // userclient/server: writing a frame (may fail)
	numPoints
)

var pointNames = [...]string{"", "publish", "probe", "start", "open", "call", "willTerminate",
	"didTerminate", "stop", "submit", "job", "jobFree", "detach", "free", "handshake", "read", "write"}

func (p Point) String() string {
	if p > 0 && p < numPoints {
		return pointNames[p]
	}
	return fmt.Sprintf("Point(%d)", uint8(p))
}

// ParsePoint is the inverse of String.
func ParsePoint(s string) (Point, error) {
	for p := Point(1); p < numPoints; p++ {
		if pointNames[p] == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown point %q", s)
}

// Points lists every point, in lifecycle order.
func Points() []Point {
	out := make([]Point, 0, numPoints-1)
	for p := Point(1); p < numPoints; p++ {
		out = append(out, p)
	}
	return out
}

// CanFail reports whether the code at p turns an injected error into a
// failure of the operation (Publish, Open and Call return it, Probe
// declines, Start fails, a job fails, a socket operation fails). Elsewhere
// the lifecycle cannot fail, so Fail is refused there.
func (p Point) CanFail() bool {
	switch p {
	case Publish, Probe, Start, Open, Call, Job, Handshake, Read, Write:
		return true
	}
	return false
}

// CanPanic reports whether p runs inside driver code whose panics drvkit
// recovers (a callback, a client method, a job): a panic injected there is
// a driver panic. Elsewhere it would be a panic of drvkit itself.
func (p Point) CanPanic() bool {
	switch p {
	case Probe, Start, Call, WillTerminate, DidTerminate, Stop, Job:
		return true
	}
	return false
}

// Target is what a point is reached for: a *driver.Service (or a user
// client connection).
type Target interface {
	ID() uint64
	Class() string
	Name() string
}

// Site is one arrival at a point.
type Site struct {
	Point  Point
	Target Target // nil for points without one
}

func (s Site) String() string {
	if s.Target == nil {
		return s.Point.String()
	}
	return fmt.Sprintf("%s %s#%d %q", s.Point, s.Target.Class(), s.Target.ID(), s.Target.Name())
}

// Kind is what an Action does.
type Kind uint8

const (
	KindFail  Kind = iota + 1 // return an error
	KindPanic                 // panic (a driver panic)
	KindDelay                 // sleep, ignoring cancellation
	KindBlock                 // wait until a Gate is released
	KindDo                    // run a function
	KindHook                  // run a function that may fail the step
	numKinds
)

var kindNames = [...]string{"", "fail", "panic", "delay", "block", "do", "hook"}

func (k Kind) String() string {
	if k > 0 && k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Action is what an armed rule does at its site.
type Action struct {
	kind  Kind
	err   error
	value any
	d     time.Duration
	gate  *Gate
	fn    func(Site)
	hook  func(Site) error
	label string
}

// Kind says what the action does.
func (a Action) Kind() Kind { return a.kind }

// Label is the name given with Labeled, or the kind.
func (a Action) Label() string {
	if a.label != "" {
		return a.label
	}
	return a.kind.String()
}

// Labeled names the action for Stats (e.g. "unplug" for a Do).
func (a Action) Labeled(label string) Action { a.label = label; return a }

// ErrInjected is wrapped by every error Fail injects (errors.Is).
var ErrInjected = errors.New("injected fault")

// Fail makes the operation at the site fail with err wrapped in ErrInjected.
func Fail(err error) Action {
	if err == nil {
		err = errors.New("fault")
	}
	return Action{kind: KindFail, err: fmt.Errorf("%w: %w", ErrInjected, err)}
}

// Panic panics with v at the site.
func Panic(v any) Action { return Action{kind: KindPanic, value: v} }

// Delay sleeps d at the site, ignoring any cancellation (a hang).
func Delay(d time.Duration) Action { return Action{kind: KindDelay, d: d} }

// Block waits at the site until g is released.
func Block(g *Gate) Action { return Action{kind: KindBlock, gate: g} }

// Do runs fn at the site, on the goroutine that reached it. fn must not
// wait for the lifecycle to progress past the site (start such work on a
// goroutine of its own).
func Do(fn func(Site)) Action { return Action{kind: KindDo, fn: fn} }

// Hook runs fn at the site, on the goroutine that reached it, like Do; a
// non-nil error it returns fails the step where the step can fail
// (CanFail) and is ignored elsewhere, and a panic in fn is a panic at the
// site (a driver panic where CanPanic). It is what an exploration engine
// builds its fault kinds on.
func Hook(fn func(Site) error) Action { return Action{kind: KindHook, hook: fn} }

// Gate holds blocked sites until released.
type Gate struct {
	once    sync.Once
	reached chan struct{}
	rel     chan struct{}
	relOnce sync.Once
	mu      sync.Mutex
	first   Site
}

// NewGate returns a closed gate.
func NewGate() *Gate { return &Gate{reached: make(chan struct{}), rel: make(chan struct{})} }

// Reached is closed when the first site blocks on g.
func (g *Gate) Reached() <-chan struct{} { return g.reached }

// First is the first site that blocked on g (zero before Reached).
func (g *Gate) First() Site { g.mu.Lock(); defer g.mu.Unlock(); return g.first }

// Release lets every blocked site, and every later one, pass.
func (g *Gate) Release() { g.relOnce.Do(func() { close(g.rel) }) }

func (g *Gate) wait(s Site) {
	g.once.Do(func() {
		g.mu.Lock()
		g.first = s
		g.mu.Unlock()
		close(g.reached)
	})
	<-g.rel
}

// Rule arms an action at a point.
type Rule struct {
	Point Point
	// Match selects the sites (nil: all). It runs under the injector's
	// lock: keep it quick and do not call back into the lifecycle.
	Match func(Site) bool
	// Skip lets that many matching sites pass before the rule fires.
	Skip int
	// Times is how many times it fires (0: once; negative: always).
	Times  int
	Action Action
}

type rule struct {
	Rule
	seen, fired int
}

// Injector holds rules and counts what fired. Install it to arm it.
type Injector struct {
	mu    sync.Mutex
	rules []*rule
	hits  [numPoints]uint64
	fired map[string]uint64
	log   []Site
}

// New returns an empty injector.
func New() *Injector { return &Injector{fired: map[string]uint64{}} }

// Add arms r. It refuses Fail where the point cannot fail and Panic where
// a panic would not be a driver's.
func (in *Injector) Add(r Rule) error {
	if r.Point == 0 || r.Point >= numPoints {
		return fmt.Errorf("rule without a valid point (%v)", r.Point)
	}
	switch r.Action.kind {
	case KindFail:
		if !r.Point.CanFail() {
			return fmt.Errorf("%s cannot fail", r.Point)
		}
	case KindPanic:
		if !r.Point.CanPanic() {
			return fmt.Errorf("a panic at %s would not be a driver's", r.Point)
		}
	case KindBlock:
		if r.Action.gate == nil {
			return errors.New("Block needs a gate")
		}
	case KindDo:
		if r.Action.fn == nil {
			return errors.New("Do needs a function")
		}
	case KindHook:
		if r.Action.hook == nil {
			return errors.New("Hook needs a function")
		}
	case KindDelay:
	default:
		return errors.New("rule without an action")
	}
	in.mu.Lock()
	in.rules = append(in.rules, &rule{Rule: r})
	in.mu.Unlock()
	return nil
}

// MustAdd is Add for rules known to be valid.
func (in *Injector) MustAdd(r Rule) {
	if err := in.Add(r); err != nil {
		panic(err)
	}
}

// Stats is what an injector saw.
type Stats struct {
	Hits  map[Point]uint64  // sites reached, per point
	Fired map[string]uint64 // actions fired, per label
	Sites []Site            // the sites where an action fired, in order
}

// Stats returns the counters so far.
func (in *Injector) Stats() Stats {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := Stats{Hits: map[Point]uint64{}, Fired: map[string]uint64{}, Sites: append([]Site(nil), in.log...)}
	for p, n := range in.hits {
		if n > 0 {
			st.Hits[Point(p)] = n
		}
	}
	for k, v := range in.fired {
		st.Fired[k] = v
	}
	return st
}

var current atomic.Pointer[Injector]

// ErrNotCompiled is returned by Install in a build with the
// drvkit_nofaultinject tag, where the hooks are compiled out.
var ErrNotCompiled = errors.New("built with drvkit_nofaultinject")

// ErrInstalled is returned by Install while another injector is armed.
var ErrInstalled = errors.New("another injector is installed")

// Install arms in for the whole process until uninstall is called.
func (in *Injector) Install() (uninstall func(), err error) {
	if !compiled {
		return nil, ErrNotCompiled
	}
	if !current.CompareAndSwap(nil, in) {
		return nil, ErrInstalled
	}
	return func() { current.CompareAndSwap(in, nil) }, nil
}

// Enabled reports whether an injector is installed.
func Enabled() bool { return current.Load() != nil }

func at(p Point, t Target) error {
	in := current.Load()
	if in == nil {
		return nil // uninstalled meanwhile
	}
	s := Site{Point: p, Target: t}
	in.mu.Lock()
	in.hits[s.Point]++
	var a *Action
	for _, r := range in.rules {
		if r.Point != s.Point || (r.Times >= 0 && r.fired >= max(r.Times, 1)) {
			continue
		}
		if r.Match != nil && !r.Match(s) {
			continue
		}
		r.seen++
		if r.seen <= r.Skip {
			continue
		}
		r.fired++
		a = &r.Action
		break
	}
	if a == nil {
		in.mu.Unlock()
		return nil
	}
	act := *a
	in.fired[act.Label()]++
	in.log = append(in.log, s)
	in.mu.Unlock()
	switch act.kind {
	case KindFail:
		return act.err
	case KindPanic:
		panic(act.value)
	case KindDelay:
		time.Sleep(act.d)
	case KindBlock:
		act.gate.wait(s)
	case KindDo:
		act.fn(s)
	case KindHook:
		if err := act.hook(s); err != nil && s.Point.CanFail() {
			return fmt.Errorf("%w: %w", ErrInjected, err)
		}
	}
	return nil
}
