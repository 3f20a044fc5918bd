package sim

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/refcount"
)

// Config configures a simulator.
type Config struct {
	// SysfsDir, if set, is kept as a sysfs tree mirroring the simulated
	// devices (uevent files, attributes, bus and class links), updated
	// before each event is delivered as the kernel does, so Walk,
	// Coldplug and ReadAttrs work on simulated devices.
	SysfsDir string
	// Buses say where the mirror lists each subsystem's devices (their
	// Classes: bus/usb/devices, class/hidraw, ...), so that coldplug and
	// resync find them; nil means buses.Default(). Other subsystems are
	// listed under class/SUBSYSTEM.
	Buses []hotplug.Bus
	// SkipWaits ignores wait steps (the event order is the same).
	SkipWaits bool
	// Live keeps the source open after the last step: Next then waits for
	// steps given to Inject instead of returning io.EOF. A daemon on a
	// simulated bus uses it to plug and unplug devices on request.
	Live bool
	// Reports receives what a scenario sends through devices rather than
	// as uevents: the input reports of `hid input` steps, delivered in
	// step order between the events (nil: dropped). The daemon connects
	// it to the simulated hidraw nodes drivers read.
	Reports func(Report)
}

// Report is an input report a simulated HID device sends.
type Report struct {
	DevPath string // the HID device's DEVPATH
	Node    string // its hidraw node, e.g. /dev/hidraw0
	Data    []byte
}

// Sim is a hotplug.Source replaying a scenario with the uevent sequences
// the kernel produces for such devices. It is deterministic: the same
// scenario gives the same datagrams, seqnums included.
type Sim struct {
	sc     *Scenario
	cfg    Config
	m      *machine
	pos    int
	queue  []simEvent
	done   chan struct{}
	inject chan *injection
	cur    *injection // the injection whose steps Next is running
	once   sync.Once
	closed bool
	mu     sync.Mutex // guards closed against Close from another goroutine
}

var _ hotplug.Source = (*Sim)(nil)

// New returns a source for sc (from ParseScenario).
func New(sc *Scenario, cfg Config) (*Sim, error) {
	if cfg.Buses == nil {
		cfg.Buses = buses.Default()
	}
	if cfg.SysfsDir != "" {
		if err := os.MkdirAll(cfg.SysfsDir, 0o755); err != nil {
			return nil, &hotplug.OpError{Op: "sim sysfs", Path: cfg.SysfsDir, Err: err}
		}
	}
	m := newMachine(1)
	if cfg.SysfsDir != "" {
		m.sysfs = newMirror(cfg.SysfsDir, cfg.Buses)
	}
	return &Sim{sc: sc, cfg: cfg, m: m, done: make(chan struct{}), inject: make(chan *injection)}, nil
}

// injection is a batch of steps handed from Inject to the goroutine in
// Next, which alone runs the simulated machine: it runs them one by one
// as a scenario's own, handing out each step's events before the next
// step (a wait) runs.
type injection struct {
	ctx    context.Context // Inject's: the rest of the steps is dropped when it ends
	label  string          // refcount.LabelFrom(ctx), stamped on the events
	sc     *Scenario
	pos    int
	err    error
	result chan error
}

// Inject runs the steps of sc (from ParseScenarioFragment) on a live
// simulator, after the scenario's own steps, against the devices plugged so
// far, exactly as a scenario runs them: each step's events are handed out
// before the next step starts, so a wait between a plug and an unplug lets
// the consumer act on the plug first. It returns nil once every step has
// run and Next has handed out every event of the batch and been called
// again — so a consumer that handles each event before asking for the next
// (as Bridge.Run does) has handled them all — or the error of the first
// step that makes no sense, such as unplugging an empty port (the steps
// before it stay done). When ctx ends, the steps not yet run are dropped.
// Inject needs Config.Live and someone calling Next.
func (s *Sim) Inject(ctx context.Context, sc *Scenario) error {
	if !s.cfg.Live {
		return &hotplug.OpError{Op: "sim inject", Err: errNotLive}
	}
	in := &injection{ctx: ctx, label: refcount.LabelFrom(ctx), sc: sc, result: make(chan error, 1)}
	select {
	case s.inject <- in:
	case <-s.done:
		return hotplug.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-in.result:
		return err
	case <-s.done:
		return hotplug.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errNotLive = errors.New("simulator is not live (Config.Live)")

// Next returns the next simulated event; io.EOF after the last step.
func (s *Sim) Next(ctx context.Context) (hotplug.Event, error) {
	for {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return hotplug.Event{}, hotplug.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return hotplug.Event{}, err
		}
		if len(s.queue) > 0 {
			se := s.queue[0]
			s.queue = s.queue[1:]
			if se.report != nil {
				if s.cfg.Reports != nil {
					s.cfg.Reports(*se.report)
				}
				continue
			}
			return se.ev, nil
		}
		if in := s.cur; in != nil {
			if in.err == nil && in.pos < len(in.sc.Steps) && in.ctx.Err() == nil {
				st := in.sc.Steps[in.pos]
				if err := s.wait(ctx, in.ctx, st); err != nil {
					if in.ctx.Err() == nil {
						return hotplug.Event{}, err // ours ended: redo the wait next time
					}
					continue // the injector gave up: drop the rest
				}
				in.pos++
				evs, err := s.m.exec(st)
				if err != nil {
					in.err = &ScenarioError{File: in.sc.Name, Line: st.Line, Msg: err.Error()}
				}
				for i := range evs {
					evs[i].ev.Label = in.label
				}
				s.queue = evs
				continue
			}
			if in.err == nil {
				in.err = in.ctx.Err()
			}
			in.result <- in.err
			s.cur = nil
		}
		if s.pos >= len(s.sc.Steps) {
			if !s.cfg.Live {
				return hotplug.Event{}, io.EOF
			}
			select {
			case in := <-s.inject:
				s.cur = in
				continue
			case <-ctx.Done():
				return hotplug.Event{}, ctx.Err()
			case <-s.done:
				return hotplug.Event{}, hotplug.ErrClosed
			}
		}
		st := s.sc.Steps[s.pos]
		if err := s.wait(ctx, nil, st); err != nil {
			return hotplug.Event{}, err // the wait is redone by the next call
		}
		s.pos++
		evs, err := s.m.exec(st)
		if err != nil {
			return hotplug.Event{}, &ScenarioError{File: s.sc.Name, Line: st.Line, Msg: err.Error()}
		}
		s.queue = evs
	}
}

// wait sleeps for a wait step, unless ctx, also (an injector's) or the
// simulator ends first.
func (s *Sim) wait(ctx, also context.Context, st Step) error {
	if st.Cmd != "wait" || s.cfg.SkipWaits || st.Wait <= 0 {
		return nil
	}
	var alsoDone <-chan struct{}
	if also != nil {
		alsoDone = also.Done()
	}
	t := time.NewTimer(st.Wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-alsoDone:
		return also.Err()
	case <-s.done:
		return hotplug.ErrClosed
	}
}

// Close ends the source; a Next waiting in a wait step returns
// hotplug.ErrClosed.
func (s *Sim) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
	})
	return nil
}
