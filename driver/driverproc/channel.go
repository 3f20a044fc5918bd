package driverproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/host/wire"
	ucwire "github.com/drvkit/drvkit/userclient/wire"
)

// maxChannelCalls bounds the calls in flight over all of a process's
// channels: each channel has its application's max_inflight, but one
// application may hold many handles, each with its channel (the daemon
// bounds calls per user on its own path the same way). Past it the
// channels are not read until a call returns.
const maxChannelCalls = 256

// channel serves one application's calls on the connection the daemon
// handed over (protocol 1.3, "channel"): the application's user-client
// socket, past its handshake, on which it sends call, cancel and ping
// frames of the user-client protocol and reads their answers. The calls
// reach the local instance as the daemon's own do, so the local registry
// keeps the lifecycle's rules (no call after the instance was terminated,
// none after its Stop); the daemon keeps the user client, its
// notifications, and the right to close the channel.
type channel struct {
	p        *proc
	id       uint64
	inst     *driver.Service
	nc       *net.UnixConn
	dec      *ucwire.Decoder
	maxFrame int
	methods  map[string]wire.ChannelMethod
	sem      chan struct{} // bounds the calls in flight (max_inflight)

	wmu  sync.Mutex // one frame at a time on the socket
	wbuf []byte

	mu     sync.Mutex
	calls  map[uint64]*channelCall
	closed bool
	wg     sync.WaitGroup // calls in flight
}

type channelCall struct {
	cancel    context.CancelFunc
	cancelled bool // by the application's cancel frame (under channel.mu)
}

// openChannel answers a channel message: it starts serving the
// descriptor it carried.
func (p *proc) openChannel(m *wire.Message, files []*os.File) {
	fail := func(err error) {
		closeFiles(files)
		p.send(wire.Errorf(m.ID, wire.CodeFailed, "%v", err))
	}
	p.mu.Lock()
	inst := p.inst
	_, dup := p.channels[m.Channel]
	p.mu.Unlock()
	switch {
	case inst == nil:
		fail(errors.New("the instance has not started"))
		return
	case dup:
		fail(fmt.Errorf("channel %d is open already", m.Channel))
		return
	}
	nc, err := net.FileConn(files[0])
	files[0].Close() // FileConn made its own
	uc, ok := nc.(*net.UnixConn)
	if err != nil || !ok {
		if nc != nil {
			nc.Close()
		}
		p.send(wire.Errorf(m.ID, wire.CodeFailed, "channel %d: not a Unix socket (%v)", m.Channel, err))
		return
	}
	maxFrame := m.MaxFrame
	if maxFrame <= 0 {
		maxFrame = ucwire.DefaultMaxFrame
	}
	inflight := m.MaxInflight
	if inflight <= 0 {
		inflight = 64
	}
	ch := &channel{p: p, id: m.Channel, inst: inst, nc: uc, dec: ucwire.NewDecoder(uc, maxFrame), maxFrame: maxFrame,
		methods: make(map[string]wire.ChannelMethod, len(m.Methods)), sem: make(chan struct{}, inflight),
		calls: map[uint64]*channelCall{}}
	for _, mt := range m.Methods {
		ch.methods[mt.Name] = mt
	}
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		uc.Close()
		p.send(wire.Errorf(m.ID, wire.CodeFailed, "the instance is stopping"))
		return
	}
	p.channels[m.Channel] = ch
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		ch.serve()
	}()
	p.send(&wire.Message{Type: wire.TypeResult, ID: m.ID})
}

// closeChannel ends channel id (channel_close): its calls are cancelled
// and the socket closed; the application reads the end of its channel.
func (p *proc) closeChannel(id uint64) {
	p.mu.Lock()
	ch := p.channels[id]
	p.mu.Unlock()
	if ch != nil {
		ch.close()
	}
}

// closeChannels ends them all (stop, shutdown): nothing of an
// application reaches the instance after its Stop.
func (p *proc) closeChannels() {
	p.mu.Lock()
	p.stopping = true
	chs := make([]*channel, 0, len(p.channels))
	for _, ch := range p.channels {
		chs = append(chs, ch)
	}
	p.mu.Unlock()
	for _, ch := range chs {
		ch.close()
		ch.wg.Wait()
	}
}

func (ch *channel) close() {
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return
	}
	ch.closed = true
	for _, c := range ch.calls {
		c.cancel()
	}
	ch.mu.Unlock()
	ch.nc.Close() // the reader sees it and ends
}

// serve reads the application's frames until the channel ends.
func (ch *channel) serve() {
	defer func() {
		ch.close()
		ch.wg.Wait()
		ch.p.mu.Lock()
		delete(ch.p.channels, ch.id)
		ch.p.mu.Unlock()
	}()
	last := ""
	for {
		f, err := ch.dec.ReadFrame()
		if err != nil {
			if errors.Is(err, ucwire.ErrProtocol) {
				ch.fatal(ucwire.CodeProtocol, err.Error())
			}
			return // the application closed it, or we did
		}
		switch f.Type {
		case ucwire.TypeCall:
			hm, err := ucwire.DecodeHandleMsg(f.Control, last)
			if err != nil {
				ch.fatal(ucwire.CodeProtocol, "bad call payload: "+err.Error())
				return
			}
			last = hm.Method
			// A call: its slot first (past max_inflight the channel is
			// not read, as the daemon does), then the call on a goroutine
			// of its own — in the SDK's single-P process the reader parks
			// in the next read and the call runs at once, without waking
			// a thread.
			ch.sem <- struct{}{}
			ch.p.callSlots <- struct{}{}
			ctx, ok := ch.begin(f.ID)
			if !ok {
				<-ch.p.callSlots
				<-ch.sem
				ch.fatal(ucwire.CodeProtocol, fmt.Sprintf("call id %d is already in flight", f.ID))
				return
			}
			in := append([]byte(nil), f.Data...)
			ch.wg.Add(1)
			go ch.call(ctx, f.ID, hm.Method, in)
		case ucwire.TypeCancel:
			ch.mu.Lock()
			if c := ch.calls[f.ID]; c != nil {
				c.cancelled = true
				c.cancel()
			}
			ch.mu.Unlock()
			continue
		case ucwire.TypePing:
			ch.write(&ucwire.Frame{Type: ucwire.TypeReply, ID: f.ID, Data: f.Data})
			continue
		default:
			ch.fatal(ucwire.CodeProtocol, fmt.Sprintf("a direct call channel serves call, cancel and ping, not %v", f.Type))
			return
		}
	}
}

// begin registers call id and makes its context; false if one with that
// id is in flight.
func (ch *channel) begin(id uint64) (context.Context, bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, dup := ch.calls[id]; dup || id == 0 {
		return nil, false
	}
	ctx, cancel := context.WithCancel(context.Background())
	if ch.closed {
		cancel()
	}
	ch.calls[id] = &channelCall{cancel: cancel}
	return ctx, true
}

func (ch *channel) call(ctx context.Context, id uint64, method string, in []byte) {
	defer ch.wg.Done()
	defer func() { <-ch.p.callSlots; <-ch.sem }()
	out, err := ch.run(ctx, method, in)
	ch.mu.Lock()
	c := ch.calls[id]
	delete(ch.calls, id)
	cancelled := c != nil && c.cancelled
	ch.mu.Unlock()
	if c != nil {
		c.cancel()
	}
	if err == nil {
		ch.write(&ucwire.Frame{Type: ucwire.TypeReply, ID: id, Data: out})
		return
	}
	code, text := ch.errorOf(err)
	if !cancelled && code != ucwire.CodeNoDevice && code != ucwire.CodeTerminated && !ch.inst.State().Active {
		// The instance was terminated under the call: as through the
		// daemon, the application hears that, whatever the method made
		// of its cancelled context.
		code, text = ch.errorOf(fmt.Errorf("during the call: %w (%v)", driver.ErrNotActive, err))
	}
	if cancelled {
		code, text = ucwire.CodeCancelled, fmt.Sprintf("call %q cancelled by the client: %s", method, text)
	}
	ch.writeError(id, 0, code, text)
}

// run checks the call against the manifest's methods and limits and runs
// it on the local instance.
func (ch *channel) run(ctx context.Context, method string, in []byte) ([]byte, error) {
	mt, ok := ch.methods[method]
	if !ok {
		return nil, fmt.Errorf("%w: %q", driver.ErrNoMethod, method)
	}
	if mt.MaxInput > 0 && len(in) > mt.MaxInput {
		return nil, fmt.Errorf("%d bytes of input, max_input is %d", len(in), mt.MaxInput)
	}
	out, err := ch.inst.Call(ctx, method, in)
	if err == nil && mt.MaxOutput > 0 && len(out) > mt.MaxOutput {
		return nil, fmt.Errorf("the driver returned %d bytes, max_output is %d", len(out), mt.MaxOutput)
	}
	if err == nil && ucwire.HeaderLen+len(out) > ch.maxFrame {
		return nil, fmt.Errorf("the driver returned %d bytes, more than a frame carries (%d)", len(out), ch.maxFrame)
	}
	return out, err
}

// errorOf is the wire code and text of a call's error, as the daemon
// would have answered it.
func (ch *channel) errorOf(err error) (code, text string) {
	switch {
	case errors.Is(err, driver.ErrNotActive), errors.Is(err, driver.ErrClosed):
		if _, root := ch.inst.TerminationCause(); root == driver.CauseUnplug {
			return ucwire.CodeNoDevice, "terminated: no such device (unplugged): " + err.Error()
		}
		return ucwire.CodeTerminated, "terminated: " + err.Error()
	case errors.Is(err, driver.ErrNoDevice):
		return ucwire.CodeNoDevice, err.Error()
	case errors.Is(err, driver.ErrNoMethod):
		return ucwire.CodeNoMethod, err.Error()
	}
	return ucwire.CodeFailed, err.Error()
}

func (ch *channel) fatal(code, text string) {
	ch.writeError(0, ucwire.FlagFatal, code, text)
}

func (ch *channel) writeError(id uint64, flags uint8, code, text string) {
	ctl, _ := json.Marshal(ucwire.ErrorMsg{Code: code, Message: text})
	ch.write(&ucwire.Frame{Type: ucwire.TypeError, Flags: flags, ID: id, Control: ctl})
}

// write sends one frame; a failed write ends the channel.
func (ch *channel) write(f *ucwire.Frame) {
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	b, err := ucwire.AppendFrame(ch.wbuf[:0], f, ch.maxFrame)
	if err != nil {
		ch.p.log.Warn("direct channel: frame not sent", "channel", ch.id, "err", err)
		return
	}
	ch.wbuf = b
	if _, err := ch.nc.Write(b); err != nil {
		ch.close()
	}
}
