package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/host/wire"
)

// proxy is the driver of an out-of-process instance: it stands for the
// driver in the daemon's registry and forwards to its process.
type proxy struct {
	b       *bundleState
	methods map[string]driver.Method

	// Set by Start, read-only afterwards.
	s     *driver.Service
	nub   *driver.Service
	proc  *process
	conn  *wire.Conn
	grant *devgrant.Grant
	hello chan *wire.Message
	rdone chan struct{} // the reader ended

	mu       sync.Mutex
	nextID   uint64
	pending  map[uint64]chan *wire.Message
	dead     chan struct{} // closed by broken
	deadErr  error
	started  bool // start answered: a death from now on is a crash
	stopping bool // stop sent (or Start failed): a death is expected
	notices  int  // notices (message, will_terminate) being sent
	closing  bool // the host closes the connection itself
	direct   bool // the driver serves direct call channels (its hello, 1.3)
	channels uint64

	shutOnce sync.Once
}

var (
	_ driver.Driver         = (*proxy)(nil)
	_ driver.WillTerminater = (*proxy)(nil)
	_ driver.DidTerminater  = (*proxy)(nil)
	_ driver.MessageHandler = (*proxy)(nil)
	_ driver.ClientMethods  = (*proxy)(nil)
)

func newProxy(b *bundleState) *proxy {
	p := &proxy{b: b, pending: map[uint64]chan *wire.Message{}, dead: make(chan struct{})}
	if len(b.methods) > 0 {
		p.methods = make(map[string]driver.Method, len(b.methods))
		for name, mt := range b.methods {
			p.methods[name] = func(ctx context.Context, _ *driver.Service, in []byte) ([]byte, error) {
				return p.call(ctx, mt, in)
			}
		}
	}
	return p
}

func (p *proxy) name() string { return p.b.m.Name }

func (p *proxy) pid() int {
	if p.proc == nil {
		return 0
	}
	return p.proc.pid
}

func (p *proxy) opErr(op string, err error) error {
	var oe *OpError
	if errors.As(err, &oe) {
		return err
	}
	return &OpError{Op: op, Driver: p.name(), PID: p.pid(), Err: err}
}

// Start spawns the process, runs the handshake and the driver's start.
func (p *proxy) Start(ctx context.Context, s *driver.Service) error {
	p.s = s
	if why := p.b.isDisabled(); why != "" {
		return p.opErr("start", fmt.Errorf("%w: %s", ErrDisabled, why))
	}
	if provs := s.Providers(); len(provs) > 0 {
		p.nub = provs[0]
	}
	if p.nub == nil {
		return p.opErr("start", errors.New("no nub"))
	}
	gone := s.Done()
	startTimeout, _ := p.b.timeouts()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	grant, err := devgrant.Open(ctx, p.b.h.cfg.Resources, p.nub)
	if err != nil {
		err = p.opErr("grant", err)
		p.b.setLastErr(err)
		return err
	}
	p.grant = grant
	conn, peer, err := wire.Pair()
	if err != nil {
		grant.Close()
		return p.opErr("spawn", err)
	}
	p.conn = conn
	proc, err := spawn(p.b.m, peer, p.b.h.log)
	peer.Close() // the child has its copy
	if err != nil {
		conn.Close()
		grant.Close()
		err = p.opErr("spawn", err)
		p.b.crashed(err, p.nub, gone, true)
		return err
	}
	p.proc = proc
	p.b.addProc(p, proc.pid)
	// The process is a managed resource too: should DidTerminate and Stop
	// both not run (their callbacks panicked), releasing the instance's
	// resources still stops and reaps it. (Found by the Driver Verifier:
	// panic@didTerminate with panic@stop left the process and its
	// goroutines.) shutdown runs once.
	_ = s.ManageFunc(func() {
		_, stop := p.b.timeouts()
		p.shutdown(stop)
	})
	p.hello = make(chan *wire.Message, 1)
	p.rdone = make(chan struct{})
	go p.read()
	go p.watch()

	err = p.startProcess(ctx)
	if err == nil {
		p.mu.Lock()
		if p.deadErr != nil {
			err = p.deadErr
		} else {
			p.started = true
		}
		p.mu.Unlock()
	}
	if err == nil {
		return nil
	}
	// A refused start is the driver's answer, like an in-process Start's
	// error; anything else (no answer, a death, a broken protocol, a
	// timeout) is a crash, and matching runs again after the backoff.
	var refused *refusedError
	crash := !errors.As(err, &refused) && s.Context().Err() == nil
	p.mu.Lock()
	p.stopping = !crash
	p.mu.Unlock()
	if crash {
		err = p.opErr("start", err)
		p.b.crashed(err, p.nub, gone, true)
	} else {
		err = p.opErr("start", err)
		p.b.setLastErr(err)
	}
	p.shutdown(0)
	return err
}

// refusedError is the driver's own error answer to start.
type refusedError struct{ m *wire.Message }

func (e *refusedError) Error() string { return e.m.Code + ": " + e.m.Text }

func (p *proxy) startProcess(ctx context.Context) error {
	m := p.b.m
	if err := p.conn.Send(&wire.Message{Type: wire.TypeHello, Version: wire.Version, Driver: m.Name, MaxMessage: wire.MaxMessage, Trace: p.b.h.cfg.TraceDrivers}); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	var hello *wire.Message
	select {
	case hello = <-p.hello:
	case <-p.dead:
		return p.deathErr("during the handshake")
	case <-ctx.Done():
		return p.ctxErr(ctx, "the handshake")
	}
	if err := wire.CheckVersion(hello.Version); err != nil {
		_ = p.conn.Send(wire.Errorf(0, wire.CodeVersion, "the daemon speaks protocol %s, the driver %s", wire.Version, hello.Version))
		return fmt.Errorf("handshake: %w", err)
	}
	if _, minor, _ := wire.ParseVersion(hello.Version); minor >= 3 && hello.Direct {
		p.mu.Lock()
		p.direct = true
		p.mu.Unlock()
	}

	props := p.nub.Properties()
	vals, types := wire.EncodeProperties(props.Map())
	pers := p.s.Personality()
	start := &wire.Message{Type: wire.TypeStart, Driver: m.Name,
		Personality: &wire.Personality{Name: pers.Name, Class: pers.Class, ProviderClass: pers.ProviderClass},
		Nub:         &wire.Nub{ID: p.nub.ID(), Class: p.nub.Class(), Name: p.nub.Name(), Properties: vals, Types: types},
		Providers:   providerChain(p.nub),
	}
	files := make([]*os.File, len(p.grant.Files))
	for i, f := range p.grant.Files {
		start.Files = append(start.Files, wire.File{Resource: f.Resource, Node: f.Node, Kind: f.Kind})
		files[i] = f.File
	}
	id, ch := p.request()
	start.ID = id
	if err := p.conn.Send(start, files...); err != nil {
		p.forget(id)
		return fmt.Errorf("start: %w", err)
	}
	select {
	case r := <-ch:
		if r.Type == wire.TypeError {
			return &refusedError{r}
		}
		return nil
	case <-p.dead:
		return p.deathErr("during start")
	case <-ctx.Done():
		// Terminated (or timed out) during start: the driver is told,
		// and has a moment to answer before it is killed.
		_ = p.conn.Send(&wire.Message{Type: wire.TypeCancel, ID: id})
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-ch:
		case <-p.dead:
		case <-t.C:
		}
		return p.ctxErr(ctx, "start")
	}
}

func (p *proxy) ctxErr(ctx context.Context, what string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && p.s.Context().Err() == nil {
		start, _ := p.b.timeouts()
		return fmt.Errorf("%w: no answer to %s within %v", ErrTimeout, what, start)
	}
	return fmt.Errorf("%s: %w", what, driver.ErrNotActive)
}

func (p *proxy) deathErr(when string) error {
	p.mu.Lock()
	err := p.deadErr
	p.mu.Unlock()
	return fmt.Errorf("%s: %w", when, err)
}

// request registers a new request id.
func (p *proxy) request() (uint64, chan *wire.Message) {
	ch := make(chan *wire.Message, 1)
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	p.pending[id] = ch
	p.mu.Unlock()
	return id, ch
}

func (p *proxy) forget(id uint64) {
	p.mu.Lock()
	delete(p.pending, id)
	p.mu.Unlock()
}

// read dispatches what the driver sends until the connection ends.
func (p *proxy) read() {
	defer close(p.rdone)
	helloSeen := false
	notes := bucket{rate: notifyRate, burst: notifyBurst}
	logs := bucket{rate: logRate, burst: logBurst}
	droppedLogs := 0
	for {
		m, files, err := p.conn.Receive()
		for _, f := range files {
			f.Close()
		}
		if err != nil {
			p.mu.Lock()
			closing := p.closing
			p.mu.Unlock()
			switch {
			case closing:
				p.broken(errors.New("connection closed by the host"))
			case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
				// The exit status says more than the closed socket: watch
				// reports the death once the process is reaped. A process
				// that closed its socket and lives on is given up on.
				t := time.NewTimer(2 * time.Second)
				select {
				case <-p.proc.exited:
				case <-t.C:
					p.broken(fmt.Errorf("%w: the driver closed its socket", ErrCrashed))
				}
				t.Stop()
			default:
				p.protocolError(err)
			}
			return
		}
		if !wire.FromDriver(m.Type) {
			p.protocolError(fmt.Errorf("%w: a driver does not send %s", wire.ErrMalformed, m.Type))
			return
		}
		switch m.Type {
		case wire.TypeHello:
			if helloSeen {
				p.protocolError(fmt.Errorf("%w: a second hello", wire.ErrMalformed))
				return
			}
			helloSeen = true
			p.hello <- m
		case wire.TypeResult, wire.TypeError:
			if m.Type == wire.TypeError && m.ID == 0 {
				p.broken(fmt.Errorf("%w: the driver gave up: %s: %s", ErrCrashed, m.Code, m.Text))
				return
			}
			p.mu.Lock()
			ch := p.pending[m.ID]
			delete(p.pending, m.ID)
			p.mu.Unlock()
			if ch != nil {
				ch <- m
				// Let the caller, just woken, answer its client before
				// this goroutine's next read finds nothing and parks.
				runtime.Gosched()
			}
		case wire.TypeNotify:
			if d := notes.wait(time.Now()); d > 0 {
				time.Sleep(d)
			}
			p.mu.Lock()
			ok := p.started
			p.mu.Unlock()
			if !ok {
				continue // in process no client could have heard it either
			}
			if m.To == wire.ToClients {
				p.s.MessageClients(driver.MessageType(m.Msg), m.Data)
			} else {
				p.s.Notify(driver.MessageType(m.Msg), m.Data)
			}
		case wire.TypeLog:
			if !logs.allow(time.Now()) {
				droppedLogs++
				continue
			}
			lvl := map[string]slog.Level{"debug": slog.LevelDebug, "warn": slog.LevelWarn, "error": slog.LevelError}[m.Level]
			args := []any{"driver", p.name(), "pid", p.pid()}
			if droppedLogs > 0 {
				args = append(args, "dropped", droppedLogs) // lines over the driver's log rate before this one
				droppedLogs = 0
			}
			p.b.h.log.Log(context.Background(), lvl, m.Text, args...)
		case wire.TypeLeaks:
			p.b.leaked(p, m.Leaks)
		case wire.TypeTerminate:
			p.mu.Lock()
			ok := p.started && !p.stopping
			p.mu.Unlock()
			if ok {
				c, err := driver.ParseCause(m.Cause)
				if err != nil {
					c = driver.CauseUnknown
				}
				p.s.TerminateWith(c)
			}
		}
	}
}

// protocolError: the driver broke the protocol. It is told why, and the
// host gives up on it (a crash).
func (p *proxy) protocolError(err error) {
	_ = p.conn.Send(wire.Errorf(0, wire.CodeProtocol, "%v", err))
	p.broken(fmt.Errorf("%w: protocol violation: %w", ErrCrashed, err))
}

// watch reaps the process.
func (p *proxy) watch() {
	<-p.proc.exited
	p.b.removeProc(p) // Status lists live processes only
	p.broken(fmt.Errorf("%w: process %d %s", ErrCrashed, p.proc.pid, p.proc.describeExit()))
}

// broken marks the connection dead (once), kills the process and fails
// what waits on it. A death while the instance runs is a crash.
func (p *proxy) broken(err error) {
	p.mu.Lock()
	if p.deadErr != nil {
		p.mu.Unlock()
		return
	}
	p.deadErr = err
	close(p.dead)
	crash := p.started && !p.stopping
	var gone <-chan struct{}
	active := false
	if crash {
		// s cannot be freed before our Stop has run, which has not: hold
		// it for what follows.
		p.s.TaggedRetain(p)
		gone = p.s.Done()
		active = p.s.State().Active
	}
	pending := p.pending
	p.pending = map[uint64]chan *wire.Message{}
	p.mu.Unlock()
	p.proc.kill()
	for _, ch := range pending {
		close(ch)
	}
	if !crash {
		return
	}
	err = p.opErr("run", err)
	// A death while terminating (an unplug, an unload) is counted but does
	// not bring the driver back.
	p.b.crashed(err, p.nub, gone, active)
	p.s.TerminateWith(driver.CauseCrashed)
	p.s.TaggedRelease(p)
}

// Message forwards the nub's messages (ServiceIsTerminated first of all).
func (p *proxy) Message(_ *driver.Service, m driver.Message) error {
	if !p.noticeBegin() {
		return nil
	}
	defer p.noticeEnd()
	data, _ := wire.MessageData(m.Data)
	if len(data) > wire.MaxData {
		data = nil
	}
	err := p.conn.Send(&wire.Message{Type: wire.TypeMessage, Msg: uint32(m.Type), From: m.From, Cause: m.Cause.Text(), RootCause: m.RootCause.Text(), Data: data})
	if err != nil && !p.isDead() {
		return p.opErr("message", err)
	}
	return nil
}

// noticeBegin reports whether a notice (a message, will_terminate) may go
// to the driver now, and if so counts it until noticeEnd: only once it
// answered its start, while it lives, and before its stop. The registry
// delivers the nub's messages and WillTerminate concurrently with Start
// (an unplug during Start), when the connection may not exist yet or the
// hello not be sent: a termination during the start reaches the driver
// as the start's cancel instead. After stop the protocol sends nothing —
// and a driver that exits with a message unread resets the connection,
// which loses what it sent last (its leaks report, its stop answer).
// (Both found by the Driver Verifier: unplug@start panicked on a nil
// connection; leak reports of the leakybundle example went missing.)
func (p *proxy) noticeBegin() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started || p.stopping || p.deadErr != nil {
		return false
	}
	p.notices++
	return true
}

func (p *proxy) noticeEnd() {
	p.mu.Lock()
	p.notices--
	p.mu.Unlock()
}

// noticesDone waits (bounded by deadline) for the notices that began
// before stopping was set to be sent, so that stop is the last message.
func (p *proxy) noticesDone(deadline <-chan time.Time) {
	for {
		p.mu.Lock()
		n := p.notices
		p.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-deadline:
			return
		case <-p.dead:
			return
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// deathErrIsNil: the process has not died (nor broken the protocol).
func (p *proxy) deathErrIsNil() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deadErr == nil
}

func (p *proxy) isDead() bool {
	select {
	case <-p.dead:
		return true
	default:
		return false
	}
}

// WillTerminate tells the driver; it does not wait for an answer.
func (p *proxy) WillTerminate(s *driver.Service) {
	if !p.noticeBegin() {
		return
	}
	defer p.noticeEnd()
	cause, root := s.TerminationCause()
	_ = p.conn.Send(&wire.Message{Type: wire.TypeWillTerminate, Cause: cause.Text(), RootCause: root.Text()})
}

// DidTerminate starts the process's shutdown in a job of the instance:
// the termination worker waits for it without blocking (it parks the
// branch until the job returns), Blockers shows it, and the job ends
// within the stop timeout, the process killed if need be.
func (p *proxy) DidTerminate(s *driver.Service) {
	_, stop := p.b.timeouts()
	err := s.Submit(driver.Job{
		Key: fmt.Sprintf("stop driver process %d (killed after %v)", p.pid(), stop),
		Run: func(context.Context) error { p.shutdown(stop); return nil },
	})
	if err != nil {
		p.b.h.log.Warn("stopping the driver process in Stop", "driver", p.name(), "pid", p.pid(), "err", err)
	}
}

// Stop makes sure the process is gone (DidTerminate's job did it, unless
// it could not be queued).
func (p *proxy) Stop(*driver.Service) {
	_, stop := p.b.timeouts()
	p.shutdown(stop)
}

// shutdown asks the process to stop, waiting up to timeout for each
// answer (0: no asking), kills it if need be, reaps it, and releases the
// socket and the grant. Once.
func (p *proxy) shutdown(timeout time.Duration) {
	p.shutOnce.Do(func() {
		if p.proc == nil {
			return
		}
		asked := false // stop answered by a live process
		if timeout > 0 && !p.isDead() {
			if err := p.askStop(timeout); err != nil {
				p.b.h.log.Error("driver process killed", "driver", p.name(), "pid", p.pid(), "err", err)
				p.b.setLastErr(p.opErr("stop", err))
				p.b.hung(p.opErr("stop", err).Error())
			} else {
				asked = p.deathErrIsNil()
			}
		}
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		// A stopped driver exits at once; one that does not is killed.
		t := time.NewTimer(time.Second)
		select {
		case <-p.proc.exited:
		case <-t.C:
			if asked {
				p.b.hung(p.opErr("stop", errors.New("answered stop but did not exit within 1s: killed")).Error())
			}
		}
		t.Stop()
		p.proc.kill()
		<-p.proc.exited
		// What the driver sent just before it exited (its leaks report,
		// its stop answer) may still be queued: the reader reads it up to
		// the end of the connection — the exited process's end is closed —
		// before the host closes its own, unless a child that outlived
		// the driver holds that end. (Found by the Driver Verifier: the
		// exit, seen first, closed the connection over an unread leaks
		// report.)
		drain := time.NewTimer(time.Second)
		select {
		case <-p.rdone:
		case <-drain.C:
		}
		drain.Stop()
		p.mu.Lock()
		p.closing = true
		p.mu.Unlock()
		p.conn.Close()
		<-p.rdone
		p.proc.closeOutput()
		if err := p.grant.Close(); err != nil {
			p.b.h.log.Warn("releasing the device grant", "driver", p.name(), "err", err)
		}
		p.b.removeProc(p)
	})
}

func (p *proxy) askStop(timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	cause, root := p.s.TerminationCause()
	for _, typ := range []string{wire.TypeDidTerminate, wire.TypeStop} {
		id, ch := p.request()
		if typ == wire.TypeStop {
			p.mu.Lock()
			p.stopping = true
			p.mu.Unlock()
			p.noticesDone(deadline.C)
		}
		if err := p.conn.Send(&wire.Message{Type: typ, ID: id, Cause: cause.Text(), RootCause: root.Text()}); err != nil {
			p.forget(id)
			return nil // dead already: nothing to ask
		}
		select {
		case <-ch:
		case <-p.dead:
			return nil
		case <-deadline.C:
			p.forget(id)
			return fmt.Errorf("%w: no answer to %s within %v", ErrTimeout, typ, timeout)
		}
	}
	return nil
}

// DirectCalls reports whether the driver's process can serve an
// application's calls on a channel of their own (AdoptCalls).
func (p *proxy) DirectCalls() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.direct && p.started && !p.stopping && p.deadErr == nil && len(p.methods) > 0
}

// AdoptCalls hands conn — an application's user-client connection, past
// its handshake — to the driver's process, which serves the application's
// calls on it from then on: a call crosses one process boundary instead
// of two. client is the application's user client in the registry. The
// process answers once it reads conn; end closes the channel (the
// application closed its handle, or died). conn stays the caller's to
// close: the process has its own copy.
func (p *proxy) AdoptCalls(ctx context.Context, conn *os.File, client *driver.Service, maxFrame, maxInflight int) (end func(), err error) {
	if !p.noticeBegin() {
		return nil, p.opErr("adopt calls", fmt.Errorf("%w: the driver process is not running", driver.ErrNotActive))
	}
	p.mu.Lock()
	p.channels++
	n := p.channels
	p.mu.Unlock()
	m := &wire.Message{Type: wire.TypeChannel, Channel: n, Client: client.ID(), MaxFrame: maxFrame, MaxInflight: maxInflight}
	for _, mt := range p.b.methods {
		m.Methods = append(m.Methods, wire.ChannelMethod{Name: mt.Name, MaxInput: mt.MaxInput, MaxOutput: mt.MaxOutput})
	}
	id, ch := p.request()
	m.ID = id
	err = p.conn.Send(m, conn)
	p.noticeEnd()
	if err != nil {
		p.forget(id)
		return nil, p.opErr("adopt calls", err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, p.opErr("adopt calls", p.deathErr("during the hand-over"))
		}
		if r.Type == wire.TypeError {
			return nil, p.opErr("adopt calls", errors.New(r.Code+": "+r.Text))
		}
	case <-ctx.Done():
		p.forget(id)
		p.closeChannel(n)
		return nil, ctx.Err()
	}
	return sync.OnceFunc(func() { p.closeChannel(n) }), nil
}

// closeChannel tells the process to close channel n, unless it is
// stopping (its stop closes every channel) or gone.
func (p *proxy) closeChannel(n uint64) {
	if !p.noticeBegin() {
		return
	}
	defer p.noticeEnd()
	_ = p.conn.Send(&wire.Message{Type: wire.TypeChannelClose, Channel: n})
}

// Methods are the manifest's methods, forwarded.
func (p *proxy) Methods() map[string]driver.Method { return p.methods }

func (p *proxy) call(ctx context.Context, mt bundle.Method, in []byte) ([]byte, error) {
	if mt.MaxInput > 0 && len(in) > mt.MaxInput {
		return nil, fmt.Errorf("%w: %d bytes of input, max_input is %d", ErrTooLarge, len(in), mt.MaxInput)
	}
	if len(in) > wire.MaxData {
		return nil, fmt.Errorf("%w: %d bytes of input, the protocol carries %d", ErrTooLarge, len(in), wire.MaxData)
	}
	if p.isDead() {
		return nil, p.opErr("call "+mt.Name, p.deathErr("before the call"))
	}
	id, ch := p.request()
	if err := p.conn.Send(&wire.Message{Type: wire.TypeCall, ID: id, Method: mt.Name, Data: in}); err != nil {
		p.forget(id)
		return nil, p.opErr("call "+mt.Name, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, p.opErr("call "+mt.Name, p.deathErr("during the call"))
		}
		if r.Type == wire.TypeError {
			return nil, callError(r)
		}
		if mt.MaxOutput > 0 && len(r.Data) > mt.MaxOutput {
			return nil, fmt.Errorf("%w: the driver returned %d bytes, max_output is %d", ErrTooLarge, len(r.Data), mt.MaxOutput)
		}
		if r.Data == nil {
			return []byte{}, nil
		}
		return r.Data, nil
	case <-ctx.Done():
		p.forget(id)
		_ = p.conn.Send(&wire.Message{Type: wire.TypeCancel, ID: id})
		return nil, ctx.Err()
	}
}

// callError turns the driver's error answer into the registry's errors.
func callError(m *wire.Message) error {
	switch m.Code {
	case wire.CodeNoMethod:
		return fmt.Errorf("%w: %s", driver.ErrNoMethod, m.Text)
	case wire.CodeNoDevice:
		return fmt.Errorf("%w: %s", driver.ErrNoDevice, m.Text)
	case wire.CodeCancelled:
		return fmt.Errorf("%w: %s", context.Canceled, m.Text)
	}
	return errors.New(m.Text)
}
