//go:build linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
)

// ErrAgentGone reports that the control channel to the guest closed.
var ErrAgentGone = errors.New("e2e: agent connection closed")

// GuestError is a request the agent ran and that failed in the guest.
type GuestError struct {
	Op      string
	Message string
}

func (e *GuestError) Error() string { return "e2e: guest: " + e.Op + ": " + e.Message }

// Agent is the host end of the control channel to the guest agent.
type Agent struct {
	conn  net.Conn
	trace io.Writer // every line both ways, for the log

	wmu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan agentproto.Response
	uevents []*agentproto.Uevent
	events  []agentproto.Event // the other events: progress of long requests
	changed chan struct{}
	err     error
	done    chan struct{}
}

func newAgent(conn net.Conn, trace io.Writer) *Agent {
	a := &Agent{
		conn: conn, trace: trace,
		pending: make(map[uint64]chan agentproto.Response),
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go a.read()
	return a
}

func (a *Agent) logf(format string, args ...any) {
	if a.trace != nil {
		fmt.Fprintf(a.trace, format, args...)
	}
}

func (a *Agent) read() {
	sc := bufio.NewScanner(a.conn)
	sc.Buffer(make([]byte, 0, 64<<10), agentproto.MaxLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		m, err := agentproto.DecodeMessage(line)
		if err != nil {
			a.logf("agent <- BAD %v\n", err)
			continue
		}
		a.mu.Lock()
		if r := m.Response; r != nil {
			a.logf("agent <- %s\n", line)
			if ch, ok := a.pending[r.ID]; ok {
				delete(a.pending, r.ID)
				ch <- *r
			}
		} else if m.Event.Uevent != nil {
			a.logf("agent <- uevent %s %s\n", m.Event.Uevent, m.Event.Uevent.Env["SEQNUM"])
			a.uevents = append(a.uevents, m.Event.Uevent)
			close(a.changed)
			a.changed = make(chan struct{})
		} else {
			a.logf("agent <- %s\n", line)
			a.events = append(a.events, *m.Event)
			close(a.changed)
			a.changed = make(chan struct{})
		}
		a.mu.Unlock()
	}
	a.mu.Lock()
	a.err = ErrAgentGone
	if err := sc.Err(); err != nil && !errors.Is(err, net.ErrClosed) {
		a.err = fmt.Errorf("%w: %v", ErrAgentGone, err)
	}
	for id, ch := range a.pending {
		close(ch)
		delete(a.pending, id)
	}
	close(a.changed)
	a.mu.Unlock()
	close(a.done)
}

func (a *Agent) close() {
	a.conn.Close()
	<-a.done
}

// Call runs op in the guest with args (nil or a value that marshals to JSON)
// and decodes the result into result (nil: ignore it).
func (a *Agent) Call(ctx context.Context, op string, args, result any) error {
	req := agentproto.Request{Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("e2e: %s: %w", op, err)
		}
		req.Args = b
	}
	a.mu.Lock()
	if a.err != nil {
		err := a.err
		a.mu.Unlock()
		return fmt.Errorf("e2e: %s: %w", op, err)
	}
	a.nextID++
	req.ID = a.nextID
	ch := make(chan agentproto.Response, 1)
	a.pending[req.ID] = ch
	a.mu.Unlock()

	b, _ := json.Marshal(req)
	a.logf("agent -> %s\n", b)
	a.wmu.Lock()
	a.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := a.conn.Write(append(b, '\n'))
	a.wmu.Unlock()
	if err != nil {
		a.forget(req.ID)
		return fmt.Errorf("e2e: %s: %w", op, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("e2e: %s: %w", op, a.Err())
		}
		if !r.OK {
			return &GuestError{Op: op, Message: r.Error}
		}
		if result != nil && len(r.Result) > 0 {
			if err := json.Unmarshal(r.Result, result); err != nil {
				return fmt.Errorf("e2e: %s: decoding result: %w", op, err)
			}
		}
		return nil
	case <-ctx.Done():
		a.forget(req.ID)
		return fmt.Errorf("e2e: %s: %w", op, ctx.Err())
	}
}

func (a *Agent) forget(id uint64) {
	a.mu.Lock()
	delete(a.pending, id)
	a.mu.Unlock()
}

// Err returns why the channel closed, nil while it is open.
func (a *Agent) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Match selects uevents (see agentproto.Match).
type Match = agentproto.Match

// UeventMark returns the number of uevents received so far.
func (a *Agent) UeventMark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.uevents)
}

// Uevents returns the uevents after mark that m selects.
func (a *Agent) Uevents(mark int, m Match) []*agentproto.Uevent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*agentproto.Uevent
	for i := mark; i < len(a.uevents); i++ {
		if m.Matches(a.uevents[i]) {
			out = append(out, a.uevents[i])
		}
	}
	return out
}

// WaitUevent waits for the first uevent after mark that m selects.
func (a *Agent) WaitUevent(ctx context.Context, mark int, m Match) (*agentproto.Uevent, error) {
	for {
		a.mu.Lock()
		for i := mark; i < len(a.uevents); i++ {
			if m.Matches(a.uevents[i]) {
				u := a.uevents[i]
				a.mu.Unlock()
				return u, nil
			}
		}
		mark = max(mark, len(a.uevents))
		err, changed := a.err, a.changed
		a.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("e2e: waiting for uevent %s: %w", m, err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("e2e: waiting for uevent %s: %w", m, ctx.Err())
		}
	}
}

// Exec runs argv in the guest to completion (timeout: the agent's default,
// 30 s, or ctx's deadline if sooner). A non-zero exit is a result, not an
// error; a program that cannot start is an error.
func (a *Agent) Exec(ctx context.Context, argv ...string) (*agentproto.ExecResult, error) {
	x := agentproto.ExecArgs{Argv: argv}
	if dl, ok := ctx.Deadline(); ok {
		x.TimeoutMs = max(int(time.Until(dl)/time.Millisecond), 1)
	}
	var r agentproto.ExecResult
	if err := a.Call(ctx, agentproto.OpExec, x, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Start starts a named background process in the guest ("drvctl serve").
func (a *Agent) Start(ctx context.Context, name string, argv ...string) (pid int, err error) {
	var r agentproto.StartResult
	err = a.Call(ctx, agentproto.OpStart, agentproto.StartArgs{Name: name, Argv: argv}, &r)
	return r.Pid, err
}

// Signal sends sig to the named background process.
func (a *Agent) Signal(ctx context.Context, name string, sig syscall.Signal) error {
	return a.Call(ctx, agentproto.OpSignal, agentproto.SignalArgs{Name: name, Signal: int(sig)}, nil)
}

// Wait waits for the named background process to exit and returns its
// status and output.
func (a *Agent) Wait(ctx context.Context, name string) (*agentproto.ExecResult, error) {
	x := agentproto.WaitArgs{Name: name}
	if dl, ok := ctx.Deadline(); ok {
		x.TimeoutMs = max(int(time.Until(dl)/time.Millisecond), 1)
	}
	var r agentproto.ExecResult
	if err := a.Call(ctx, agentproto.OpWait, x, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// EventMark returns the number of non-uevent events received so far.
func (a *Agent) EventMark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.events)
}

// WaitEvent waits for the first event named name after mark (other than a
// uevent): the progress a long request reports, e.g. "usb.bot.reading".
func (a *Agent) WaitEvent(ctx context.Context, mark int, name string) (agentproto.Event, error) {
	for {
		a.mu.Lock()
		for i := mark; i < len(a.events); i++ {
			if a.events[i].Event == name {
				e := a.events[i]
				a.mu.Unlock()
				return e, nil
			}
		}
		mark = max(mark, len(a.events))
		err, changed := a.err, a.changed
		a.mu.Unlock()
		if err != nil {
			return agentproto.Event{}, fmt.Errorf("e2e: waiting for event %s: %w", name, err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return agentproto.Event{}, fmt.Errorf("e2e: waiting for event %s: %w", name, ctx.Err())
		}
	}
}
