package driverproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/host/wire"
	"github.com/drvkit/drvkit/refcount"
)

// Main runs the driver process: it speaks the protocol on the socket the
// daemon passed (descriptor $DRVKIT_SOCKET_FD), runs the one instance of
// the entry the daemon names, and exits: 0 after the daemon's stop, 1 when
// the protocol failed (the error goes to stderr, which the daemon logs).
//
// Main runs the process's Go code on one thread at a time (GOMAXPROCS 1)
// unless the GOMAXPROCS environment variable says otherwise: a driver
// process serves one device and its goroutines mostly wait — on the
// device, or on the daemon — and with more than one P the runtime wakes
// a second thread for every goroutine made ready, which on a call's path
// cost more than the call itself. Blocking system calls (an SG_IO, a
// usbfs or hidraw read) still run on threads of their own. A driver that
// computes in parallel raises it with runtime.GOMAXPROCS in its Start.
func Main(entries ...drivertable.Entry) {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fd, err := strconv.Atoi(os.Getenv(wire.FDEnv))
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "%s: not started by the drvkit daemon (%s=%q)\n", os.Args[0], wire.FDEnv, os.Getenv(wire.FDEnv))
		os.Exit(2)
	}
	c, err := wire.NewConn(os.NewFile(uintptr(fd), "drvkit-socket"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[0], err)
		os.Exit(2)
	}
	if err := Run(context.Background(), c, log, entries...); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[0], err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Run serves one driver instance on c until the daemon's stop (nil) or
// until the protocol fails. It closes c.
func Run(ctx context.Context, c *wire.Conn, log *slog.Logger, entries ...drivertable.Entry) error {
	p := &proc{c: c, log: log, entries: entries, calls: map[uint64]context.CancelFunc{}, channels: map[uint64]*channel{}, callSlots: make(chan struct{}, maxChannelCalls), served: make(chan error, 1)}
	err := p.run(ctx)
	p.shutdown()
	c.Close()
	return err
}

// proc is one driver process's state.
type proc struct {
	c       *wire.Conn
	log     *slog.Logger
	entries []drivertable.Entry

	startCancel context.CancelFunc // ends the local matching (the daemon's cancel)
	startID     uint64
	startDone   chan struct{} // closed when the start's answer was sent

	mu          sync.Mutex
	reg         *driver.Registry
	nub         *driver.Service
	inst        *driver.Service // the started local instance
	bridge      *driver.Service // the daemon's side, a client holding inst open
	unsub       []func()
	files       []*os.File
	calls       map[uint64]context.CancelFunc
	channels    map[uint64]*channel // direct call channels (1.3), by number
	callSlots   chan struct{}       // calls in flight over all channels (maxChannelCalls)
	stopping    bool                // stop began: no new channel
	daemonEnded bool                // the daemon terminated the instance: no terminate back
	wg          sync.WaitGroup

	// The reading goroutine serves calls inline (callInline): inline
	// is its state and call generation, served the loop's end when a
	// standby ended it.
	inline atomic.Uint64
	served chan error

	// The daemon asked for a leaks report at stop (hello's trace):
	// references are traced from the hello on; before is what was alive
	// then.
	trace  bool
	before map[uint64]bool
}

func (p *proc) send(m *wire.Message) {
	if err := p.c.Send(m); err != nil {
		p.log.Debug("send to the daemon failed", "type", m.Type, "err", err)
	}
}

func (p *proc) fail(err error) error {
	p.send(wire.Errorf(0, wire.CodeProtocol, "%v", err))
	return err
}

func (p *proc) run(ctx context.Context) error {
	// The daemon speaks first.
	m, files, err := p.c.Receive()
	closeFiles(files)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if m.Type != wire.TypeHello {
		return p.fail(fmt.Errorf("handshake: %w: want hello, got %s", wire.ErrMalformed, m.Type))
	}
	if err := wire.CheckVersion(m.Version); err != nil {
		p.send(wire.Errorf(0, wire.CodeVersion, "the driver speaks protocol %s, the daemon %s", wire.Version, m.Version))
		return fmt.Errorf("handshake: %w", err)
	}
	if m.Trace {
		p.trace, p.before = true, map[uint64]bool{}
		refcount.TraceAll()
		for _, o := range refcount.LiveObjects() {
			p.before[o.ID()] = true
		}
	}
	p.send(&wire.Message{Type: wire.TypeHello, Version: wire.Version, PID: os.Getpid(), MaxMessage: wire.MaxMessage, Direct: true})

	handedOff, err := p.serve(ctx)
	if handedOff {
		// A standby took the reading over during a slow call, and ends
		// the loop.
		err = <-p.served
	}
	return err
}

// Reading states (the low bits of proc.inline, above them the call's
// generation): the reading goroutine reads, or serves a call inline; or
// the call's standby took the reading over.
const (
	inlineReading = iota + 1 // (0: no call served yet)
	inlineServing
	inlineHandedOff
)

// standby takes the reading over if call gen still runs inline when it
// gets to run, and reads until the loop ends or it hands off in turn.
func (p *proc) standby(ctx context.Context, gen uint64) {
	if !p.inline.CompareAndSwap(gen<<2|inlineServing, gen<<2|inlineHandedOff) {
		return // the call returned first: its goroutine reads on
	}
	if handedOff, err := p.serve(ctx); !handedOff {
		p.served <- err
	}
}

// serve reads and dispatches the daemon's messages until the daemon's
// stop (nil) or a protocol failure, or until it hands the reading off to
// the standby (handedOff: the goroutine that took over ends the loop).
func (p *proc) serve(ctx context.Context) (handedOff bool, err error) {
	for {
		m, files, err := p.c.Receive()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return false, errors.New("the daemon closed the connection")
			}
			if errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTooLarge) {
				return false, p.fail(err)
			}
			return false, err
		}
		if !wire.FromDaemon(m.Type) {
			closeFiles(files)
			return false, p.fail(fmt.Errorf("%w: the daemon does not send %s", wire.ErrMalformed, m.Type))
		}
		switch m.Type {
		case wire.TypeStart:
			if p.startDone != nil {
				closeFiles(files)
				p.send(wire.Errorf(m.ID, wire.CodeProtocol, "one start per process"))
				continue
			}
			sctx, cancel := context.WithCancel(ctx)
			p.startCancel, p.startID, p.startDone = cancel, m.ID, make(chan struct{})
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer close(p.startDone)
				p.start(sctx, m, files)
			}()
		case wire.TypeCancel:
			if m.ID == p.startID && p.startCancel != nil {
				p.startCancel()
				continue
			}
			p.mu.Lock()
			cancel := p.calls[m.ID]
			p.mu.Unlock()
			if cancel != nil {
				cancel()
			}
		case wire.TypeCall:
			if !p.callInline(ctx, m) {
				return true, nil
			}
		case wire.TypeMessage:
			p.message(m)
		case wire.TypeChannel:
			p.openChannel(m, files)
		case wire.TypeChannelClose:
			p.closeChannel(m.Channel)
		case wire.TypeWillTerminate:
			p.terminate(m.Cause, m.RootCause)
		case wire.TypeDidTerminate:
			p.terminate(m.Cause, m.RootCause)
			p.mu.Lock()
			inst, bridge := p.inst, p.bridge
			p.mu.Unlock()
			if bridge != nil {
				_ = inst.Close(bridge) // the local termination goes on
			}
			p.send(&wire.Message{Type: wire.TypeResult, ID: m.ID})
		case wire.TypeStop:
			p.stop(ctx, m.Cause)
			if p.trace {
				p.reportLeaks()
			}
			p.send(&wire.Message{Type: wire.TypeResult, ID: m.ID})
			return false, nil
		case wire.TypeError:
			return false, fmt.Errorf("the daemon gave up: %s: %s", m.Code, m.Text)
		default: // hello, result: the daemon asks, it is not answered
			return false, p.fail(fmt.Errorf("%w: unexpected %s", wire.ErrMalformed, m.Type))
		}
	}
}

// entry finds the entry the daemon names; a process of one entry runs it
// whatever the manifest calls it.
func (p *proc) entry(name string) (*drivertable.Entry, error) {
	for i := range p.entries {
		if p.entries[i].Name == name {
			return &p.entries[i], nil
		}
	}
	if len(p.entries) == 1 {
		return &p.entries[0], nil
	}
	return nil, fmt.Errorf("this executable has no driver %q", name)
}

// start builds the local registry and runs matching on the mirrored nub.
func (p *proc) start(ctx context.Context, m *wire.Message, files []*os.File) {
	fail := func(code string, err error) {
		p.send(wire.Errorf(m.ID, code, "%v", err))
	}
	recv := make([]devgrant.Received, len(files))
	for i, f := range files {
		recv[i] = devgrant.Received{Resource: m.Files[i].Resource, Node: m.Files[i].Node, Kind: m.Files[i].Kind, File: f}
	}
	p.mu.Lock()
	p.files = files
	p.mu.Unlock()
	e, err := p.entry(m.Driver)
	if err != nil {
		fail(wire.CodeFailed, err)
		return
	}
	ps, err := e.Defaults(devgrant.Resources(recv))
	if err != nil {
		fail(wire.CodeFailed, err)
		return
	}
	props, err := wire.DecodeProperties(m.Nub)
	if err != nil {
		fail(wire.CodeProtocol, err)
		return
	}
	reg := driver.NewRegistry(driver.WithLogger(p.log))
	var startErr error
	var emu sync.Mutex
	unsubErr := reg.SubscribeLifecycle(func(ev driver.LifecycleEvent) {
		if ev.Step == driver.StepStart && ev.Err != "" {
			emu.Lock()
			startErr = errors.New(ev.Err)
			emu.Unlock()
		}
	})
	p.mu.Lock()
	p.reg = reg
	p.mu.Unlock()
	for _, pers := range ps {
		if m.Personality.Class != "" && pers.Class != m.Personality.Class && len(ps) > 1 {
			continue // another personality of the entry: the daemon matched this one
		}
		if err := reg.RegisterPersonality(pers); err != nil {
			unsubErr()
			fail(wire.CodeFailed, err)
			return
		}
	}
	above, err := mirrorProviders(reg, m.Providers)
	if err != nil {
		unsubErr()
		fail(wire.CodeProtocol, err)
		return
	}
	nub := reg.NewNub(m.Nub.Class, m.Nub.Name, driver.NewProperties(props))
	p.mu.Lock()
	p.nub = nub
	p.mu.Unlock()
	stopWatch := context.AfterFunc(ctx, func() { nub.TerminateWith(driver.CauseUnknown) })
	err = reg.Publish(above, nub)
	stopWatch()
	unsubErr()
	if err != nil {
		fail(wire.CodeFailed, err)
		return
	}
	var inst *driver.Service
	for _, c := range nub.Clients() {
		if st := c.State(); st.Active && st.Started {
			inst = c
			break
		}
	}
	if inst == nil {
		emu.Lock()
		err := startErr
		emu.Unlock()
		switch {
		case ctx.Err() != nil:
			fail(wire.CodeCancelled, errors.New("start cancelled"))
		case err != nil:
			fail(wire.CodeFailed, err)
		default:
			fail(wire.CodeFailed, fmt.Errorf("no personality of %s matches the nub %s %q", e.Name, m.Nub.Class, m.Nub.Name))
		}
		return
	}
	// The daemon's side is a client of the instance that holds it open:
	// the local termination waits, as the daemon's does, for the daemon's
	// clients to close (did_terminate). Its messages and the instance's
	// notifications go to the daemon.
	b := &bridge{p: p}
	bs, err := reg.AttachClient(inst, "DaemonClient", "daemon", b)
	if err == nil {
		err = inst.Open(bs, driver.OpenOptions{})
	}
	if err != nil {
		fail(wire.CodeFailed, fmt.Errorf("the instance went during its start: %w", err))
		return
	}
	unsub := inst.AddInterest(b.interest)
	p.mu.Lock()
	p.inst, p.bridge = inst, bs
	p.unsub = append(p.unsub, unsub)
	p.mu.Unlock()
	p.send(&wire.Message{Type: wire.TypeResult, ID: m.ID})
}

// bridge stands for the daemon in the local registry.
type bridge struct{ p *proc }

var _ driver.MessageHandler = (*bridge)(nil)

// Message gets what the driver sends its clients (MessageClients), and the
// local instance's own termination.
func (b *bridge) Message(_ *driver.Service, m driver.Message) error {
	p := b.p
	switch {
	case m.Type == driver.ServiceIsTerminated:
		p.mu.Lock()
		byDaemon := p.daemonEnded
		p.mu.Unlock()
		if !byDaemon {
			// The driver terminated its instance: the daemon terminates
			// its proxy with the same cause.
			p.send(&wire.Message{Type: wire.TypeTerminate, Cause: m.Cause.Text(), RootCause: m.RootCause.Text()})
		}
	case m.Type >= driver.MessageDriverDefined:
		p.notify(wire.ToClients, m)
	}
	return nil // ServiceIsRequestingClose: did_terminate closes
}

func (b *bridge) interest(m driver.Message) {
	if m.Type >= driver.MessageDriverDefined {
		b.p.notify(wire.ToInterest, m)
	}
}

func (p *proc) notify(to string, m driver.Message) {
	data, err := wire.MessageData(m.Data)
	if err != nil {
		p.log.Warn("notification data not sent", "type", m.Type.String(), "err", err)
	}
	p.send(&wire.Message{Type: wire.TypeNotify, To: to, Msg: uint32(m.Type), Data: data})
}

// terminate maps the daemon's termination to the local one: a cascade
// from the nub terminates the local nub with its cause (the driver hears
// ServiceIsTerminated from it); a direct one terminates the instance.
func (p *proc) terminate(cause, root string) {
	c, err := driver.ParseCause(cause)
	if err != nil {
		c = driver.CauseUnknown
	}
	rc, err := driver.ParseCause(root)
	if err != nil {
		rc = c
	}
	p.mu.Lock()
	p.daemonEnded = true
	nub, inst := p.nub, p.inst
	p.mu.Unlock()
	if inst == nil {
		return
	}
	if c == driver.CauseProviderTerminated {
		nub.TerminateWith(rc)
		return
	}
	inst.TerminateWith(c)
}

func (p *proc) message(m *wire.Message) {
	p.mu.Lock()
	nub := p.nub
	p.mu.Unlock()
	if nub == nil {
		return
	}
	if m.Msg == wire.MsgServiceIsTerminated {
		p.terminate(driver.CauseProviderTerminated.Text(), m.RootCause)
		return
	}
	if m.Msg >= wire.MsgDriverDefined {
		nub.MessageClients(driver.MessageType(m.Msg), m.Data)
	}
}

// callInline runs a call on the reading goroutine and answers it from
// there, as most calls return at once: handing each call to a goroutine
// of its own woke a second thread of the process on every call. A standby
// goroutine is started first (in the SDK's single-P process that wakes
// no thread): if the call is still running when the standby gets to run
// — the call blocked, or was preempted — the standby goes on reading, so
// that a cancel, a stop or the next call is read as soon as before. It
// reports whether this goroutine reads on (false: the standby does).
func (p *proc) callInline(ctx context.Context, m *wire.Message) bool {
	// Registered before the standby may read on: a cancel behind the
	// call must find it.
	inst, cctx, cancel := p.register(m)
	if inst == nil {
		return true
	}
	gen := p.inline.Load()>>2 + 1
	p.inline.Store(gen<<2 | inlineServing)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.standby(ctx, gen)
	}()
	p.call(cctx, inst, cancel, m)
	return p.inline.CompareAndSwap(gen<<2|inlineServing, gen<<2|inlineReading)
}

// register makes call m cancellable; a nil instance: refused (answered).
func (p *proc) register(m *wire.Message) (*driver.Service, context.Context, context.CancelFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	inst := p.inst
	if inst == nil {
		p.send(wire.Errorf(m.ID, wire.CodeFailed, "the instance has not started"))
		return nil, nil, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.calls[m.ID] = cancel
	p.wg.Add(1)
	return inst, ctx, cancel
}

// call runs the registered call m and sends its answer.
func (p *proc) call(ctx context.Context, inst *driver.Service, cancel context.CancelFunc, m *wire.Message) {
	defer p.wg.Done()
	out, err := inst.Call(ctx, m.Method, m.Data)
	p.mu.Lock()
	delete(p.calls, m.ID)
	p.mu.Unlock()
	cancel()
	switch {
	case err == nil && len(out) > wire.MaxData:
		p.send(wire.Errorf(m.ID, wire.CodeTooLarge, "%s returned %d bytes (at most %d)", m.Method, len(out), wire.MaxData))
	case err == nil:
		p.send(&wire.Message{Type: wire.TypeResult, ID: m.ID, Data: out})
	case errors.Is(err, driver.ErrNoMethod):
		p.send(wire.Errorf(m.ID, wire.CodeNoMethod, "%v", err))
	case errors.Is(err, driver.ErrNoDevice):
		p.send(wire.Errorf(m.ID, wire.CodeNoDevice, "%v", err))
	case errors.Is(err, context.Canceled):
		p.send(wire.Errorf(m.ID, wire.CodeCancelled, "%v", err))
	default:
		p.send(wire.Errorf(m.ID, wire.CodeFailed, "%v", err))
	}
}

// stop ends the local instance (if the daemon's termination has not) and
// waits until it is freed: its Stop ran, its resources were released.
func (p *proc) stop(ctx context.Context, cause string) {
	if p.startCancel != nil {
		p.startCancel()
		<-p.startDone
	}
	p.mu.Lock()
	inst, bridge := p.inst, p.bridge
	p.mu.Unlock()
	if inst == nil {
		return
	}
	if cause == "" {
		cause = driver.CauseUnknown.Text()
	}
	p.terminate(cause, cause)
	p.closeChannels()
	_ = inst.Close(bridge)
	select {
	case <-inst.Done():
	case <-ctx.Done():
	}
}

// leakSettle bounds how long the local registry's close waits at stop for
// what the driver still holds (a leaked reference holds it forever; the
// daemon gives the process its stop_timeout for the two answers).
const leakSettle = 500 * time.Millisecond

// reportLeaks closes the local registry (bounded) and tells the daemon
// what the driver's code left alive: the refcount report and its culprit,
// the first frame outside drvkit of the blamed reference — the author's
// line, across the process boundary.
func (p *proc) reportLeaks() {
	p.mu.Lock()
	reg := p.reg
	p.mu.Unlock()
	if reg != nil {
		ctx, cancel := context.WithTimeout(context.Background(), leakSettle)
		_ = reg.Close(ctx) // a BlockedError: what is left is reported below
		cancel()
	}
	var objs []*refcount.Object
	for deadline := time.Now().Add(100 * time.Millisecond); ; time.Sleep(time.Millisecond) {
		objs = objs[:0]
		for _, o := range refcount.LiveObjects() {
			if !p.before[o.ID()] {
				objs = append(objs, o)
			}
		}
		if len(objs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	rep := refcount.NewReport(objs)
	var b strings.Builder
	_ = rep.WriteText(&b)
	l := &wire.Leaks{Objects: len(objs), Text: clipTo(b.String(), maxLeaksText)}
	for _, g := range rep.Leaks {
		if g.Site.Func == "" || refcount.IsFramework(g.Site) {
			continue
		}
		c := wireFrame(g.Site)
		l.Culprit = &c
		if len(g.Stacks) > 0 {
			for _, f := range g.Stacks[0].Stack.Frames {
				if len(l.Stack) == wire.MaxLeaksFrames {
					break
				}
				if f.Func != "" {
					l.Stack = append(l.Stack, wireFrame(f))
				}
			}
		}
		break
	}
	if err := p.c.Send(&wire.Message{Type: wire.TypeLeaks, Leaks: l}); err != nil && errors.Is(err, wire.ErrTooLarge) {
		l.Text, l.Stack = "", nil
		p.send(&wire.Message{Type: wire.TypeLeaks, Leaks: l})
	}
}

// maxLeaksText leaves room for JSON's escapes within wire.MaxMessage.
const maxLeaksText = 16 << 10

func wireFrame(f refcount.Frame) wire.Frame {
	return wire.Frame{Func: clipTo(f.Func, 1024), File: clipTo(f.File, 1024), Line: max(f.Line, 0)}
}

func clipTo(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// shutdown closes the local registry and what the daemon gave.
func (p *proc) shutdown() {
	if p.startCancel != nil {
		p.startCancel()
		<-p.startDone
	}
	p.closeChannels()
	p.mu.Lock()
	for _, cancel := range p.calls {
		cancel()
	}
	unsub, reg, files := p.unsub, p.reg, p.files
	p.unsub, p.files = nil, nil
	p.mu.Unlock()
	for _, u := range unsub {
		u()
	}
	if reg != nil {
		_ = reg.Close(context.Background())
	}
	p.wg.Wait()
	closeFiles(files)
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
