package hotplug

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drvkit/drvkit/refcount"
)

// SimConfig configures a simulated source.
type SimConfig struct {
	// SysfsDir, if set, is kept as a sysfs tree mirroring the simulated
	// devices (uevent files, attributes, bus and class links), updated
	// before each event is delivered as the kernel does, so Walk,
	// Coldplug and ReadAttrs work on simulated devices.
	SysfsDir string
	// SkipWaits ignores wait steps (the event order is the same).
	SkipWaits bool
	// Live keeps the source open after the last step: Next then waits for
	// steps given to Inject instead of returning io.EOF. A daemon on a
	// simulated bus uses it to plug and unplug devices on request.
	Live bool
}

// Sim is a Source replaying a scenario with the uevent sequences the
// kernel produces for such devices. It is deterministic: the same scenario
// gives the same datagrams, seqnums included.
type Sim struct {
	sc     *Scenario
	cfg    SimConfig
	m      *simMachine
	pos    int
	queue  []simEvent
	done   chan struct{}
	inject chan injection
	// injected is the result channel of the injection whose events are
	// being handed out, answered once they all have been (injErr).
	injected chan error
	injErr   error
	once     sync.Once
	closed   bool
	mu       sync.Mutex // guards closed against Close from another goroutine
}

var _ Source = (*Sim)(nil)

// NewSim returns a source for sc (from ParseScenario).
func NewSim(sc *Scenario, cfg SimConfig) (*Sim, error) {
	if cfg.SysfsDir != "" {
		if err := os.MkdirAll(cfg.SysfsDir, 0o755); err != nil {
			return nil, &OpError{Op: "sim sysfs", Path: cfg.SysfsDir, Err: err}
		}
	}
	return &Sim{sc: sc, cfg: cfg, m: newSimMachine(cfg.SysfsDir, 1), done: make(chan struct{}), inject: make(chan injection)}, nil
}

// injection is a batch of steps handed from Inject to the goroutine in Next,
// which alone runs the simulated machine.
type injection struct {
	sc     *Scenario
	result chan error
	label  string // refcount.LabelFrom(ctx), stamped on the events
}

// Inject runs the steps of sc (from ParseScenarioFragment) on a live
// simulator, after the scenario's own steps, against the devices plugged so
// far. It returns once every step has run (waits included) and its events
// are queued for Next, or at the first step that makes no sense, such as
// unplugging an empty port: the steps before it stay done. Inject returns
// only once Next has handed out every event of the batch and been called
// again, so a consumer that handles each event before asking for the next
// (as Bridge.Run does) has handled them all. Inject needs SimConfig.Live
// and someone calling Next.
func (s *Sim) Inject(ctx context.Context, sc *Scenario) error {
	if !s.cfg.Live {
		return &OpError{Op: "sim inject", Err: errors.New("simulator is not live (SimConfig.Live)")}
	}
	in := injection{sc: sc, result: make(chan error, 1), label: refcount.LabelFrom(ctx)}
	select {
	case s.inject <- in:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-in.result:
		return err
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runInjection executes an injected batch, queueing its events.
func (s *Sim) runInjection(ctx context.Context, in injection) error {
	for _, st := range in.sc.Steps {
		if st.Cmd == "wait" && !s.cfg.SkipWaits && st.Wait > 0 {
			t := time.NewTimer(st.Wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-s.done:
				t.Stop()
				return ErrClosed
			}
		}
		evs, err := s.m.exec(st)
		if err != nil {
			return &ScenarioError{File: in.sc.Name, Line: st.Line, Msg: err.Error()}
		}
		for i := range evs {
			evs[i].ev.Label = in.label
		}
		s.queue = append(s.queue, evs...)
	}
	return nil
}

// Next returns the next simulated event; io.EOF after the last step.
func (s *Sim) Next(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return Event{}, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return Event{}, err
		}
		if len(s.queue) == 0 && s.injected != nil {
			s.injected <- s.injErr
			s.injected, s.injErr = nil, nil
		}
		if len(s.queue) > 0 {
			se := s.queue[0]
			s.queue = s.queue[1:]
			return se.ev, nil
		}
		if s.pos >= len(s.sc.Steps) {
			if !s.cfg.Live {
				return Event{}, errEOF
			}
			select {
			case in := <-s.inject:
				s.injErr = s.runInjection(ctx, in)
				s.injected = in.result
				continue
			case <-ctx.Done():
				return Event{}, ctx.Err()
			case <-s.done:
				return Event{}, ErrClosed
			}
		}
		st := s.sc.Steps[s.pos]
		s.pos++
		if st.Cmd == "wait" && !s.cfg.SkipWaits && st.Wait > 0 {
			t := time.NewTimer(st.Wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				s.pos-- // the wait is redone by the next call
				return Event{}, ctx.Err()
			case <-s.done:
				t.Stop()
				return Event{}, ErrClosed
			}
		}
		evs, err := s.m.exec(st)
		if err != nil {
			return Event{}, &ScenarioError{File: s.sc.Name, Line: st.Line, Msg: err.Error()}
		}
		s.queue = evs
	}
}

// Close ends the source; a Next waiting in a wait step returns ErrClosed.
func (s *Sim) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
	})
	return nil
}

// simSysfs mirrors simulated devices into a directory tree shaped like
// sysfs.
type simSysfs struct {
	root  string
	grave int
}

// entry returns the bus or class link of a device and its subsystem dir.
func (f *simSysfs) entry(ev *Event) (link, subsys string) {
	switch ev.Subsystem {
	case "usb", "scsi":
		sub := filepath.Join(f.root, "bus", ev.Subsystem)
		return filepath.Join(sub, "devices", ev.Name()), sub
	}
	sub := filepath.Join(f.root, "class", ev.Subsystem)
	return filepath.Join(sub, ev.Name()), sub
}

func ueventFile(ev *Event, dropDriver bool) []byte {
	var b strings.Builder
	for k, v := range ev.Env() {
		switch k {
		case "ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM", "SDEV_UA":
			continue
		case "DRIVER":
			if dropDriver {
				continue
			}
		}
		b.WriteString(k + "=" + v + "\n")
	}
	return []byte(b.String())
}

func (f *simSysfs) apply(se simEvent) error {
	ev := &se.ev
	dir := filepath.Join(f.root, ev.DevPath)
	link, sub := f.entry(ev)
	wrap := func(err error) error {
		if err == nil {
			return nil
		}
		return &OpError{Op: "sim sysfs", Path: dir, Err: err}
	}
	switch ev.Action {
	case ActionAdd:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return wrap(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "uevent"), ueventFile(ev, false), 0o644); err != nil {
			return wrap(err)
		}
		keys := make([]string, 0, len(se.attrs))
		for k := range se.attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(se.attrs[k]+"\n"), 0o644); err != nil {
				return wrap(err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return wrap(err)
		}
		for l, target := range map[string]string{filepath.Join(dir, "subsystem"): sub, link: dir} {
			rel, err := filepath.Rel(filepath.Dir(l), target)
			if err != nil {
				return wrap(err)
			}
			os.Remove(l)
			if err := os.Symlink(rel, l); err != nil {
				return wrap(err)
			}
		}
	case ActionBind:
		return wrap(os.WriteFile(filepath.Join(dir, "uevent"), ueventFile(ev, false), 0o644))
	case ActionUnbind:
		old, err := os.ReadFile(filepath.Join(dir, "uevent"))
		if err != nil {
			return wrap(err)
		}
		var kept []string
		for _, l := range strings.Split(strings.TrimSuffix(string(old), "\n"), "\n") {
			if !strings.HasPrefix(l, "DRIVER=") {
				kept = append(kept, l)
			}
		}
		return wrap(os.WriteFile(filepath.Join(dir, "uevent"), []byte(strings.Join(kept, "\n")+"\n"), 0o644))
	case ActionRemove:
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return wrap(err)
		}
		// Buried, not deleted: the directory keeps its inode, so a device
		// re-created at the same path gets another one, as with kernfs
		// (ext4 would hand the freed inode number straight back).
		f.grave++
		grave := filepath.Join(f.root, ".removed", strconv.Itoa(f.grave))
		if err := os.MkdirAll(filepath.Dir(grave), 0o755); err != nil {
			return wrap(err)
		}
		if err := os.Rename(dir, grave); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return wrap(err)
		}
		return nil
	}
	return nil
}
