package userclient

import (
	"os"
	"time"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/drvkit/drvkit/userclient/wire"
)

// DialOption configures Dial.
type DialOption func(*dialConfig)

type dialConfig struct {
	maxFrame   int
	noteBuffer int
	name       string
	versions   []int
	maxReply   int
	serverUIDs []uint32 // trusted besides root and the caller's uid
	anyServer  bool
	onNote     func(*Handle, Notification)
	noDirect   bool

	// Set by Dial: how to dial a direct call channel (protocol version 4)
	// to the same server with the same options.
	path   string
	opts   []DialOption
	direct string // this connection is the direct channel of that token
}

// WithMaxFrame sets the largest frame the client accepts and sends
// (wire.DefaultMaxFrame, 1 MiB, by default).
func WithMaxFrame(n int) DialOption { return func(c *dialConfig) { c.maxFrame = n } }

// DefaultMaxReply is the default limit on a whole reply, control and data
// together, that the client reassembles from a streamed answer (256 MiB).
const DefaultMaxReply = 256 << 20

// WithMaxReply sets the largest reply (control and data together) the
// client accepts when the server streams it in parts (protocol version 3);
// DefaultMaxReply by default. A larger reply fails with ErrReplyTooLarge,
// the request is cancelled on the server and the connection stays usable.
func WithMaxReply(n int) DialOption { return func(c *dialConfig) { c.maxReply = n } }

// WithNotificationBuffer sets how many notifications each handle buffers
// (default 128). See (*Handle).Notifications for what happens when full.
func WithNotificationBuffer(n int) DialOption { return func(c *dialConfig) { c.noteBuffer = n } }

// WithNotificationHandler has every handle's notifications passed to f
// instead of its Notifications channel: f runs on the goroutine reading the
// connection — the client's own, or a caller waiting for its answer — one
// notification at a time, in the order the daemon sent them (the order of
// each handle's notifications included). It saves the
// hand-off from that goroutine to the application's: with many clients
// a notification reaches its application sooner (see docs/userclient.md).
//
// While f runs nothing else is read on this connection: f must not block
// for long (the daemon disconnects a client that falls too far behind, as
// it does one that stops reading Notifications), and must not wait for an
// answer on this client — a Call, Open or Close made in f waits for the
// goroutine that runs f; start a goroutine for those. Terminated is closed,
// and Call fails with ErrTerminated, before f gets the ServiceIsTerminated
// that caused it. Notifications channels then receive nothing; they are
// still closed when their handle ends.
func WithNotificationHandler(f func(h *Handle, n Notification)) DialOption {
	return func(c *dialConfig) { c.onNote = f }
}

// WithClientName is sent in the hello, for the daemon's logs.
func WithClientName(name string) DialOption { return func(c *dialConfig) { c.name = name } }

// WithServerUID lets Dial accept a server running as uid, besides root and
// the caller's own uid (the only ones it accepts by default).
func WithServerUID(uid uint32) DialOption {
	return func(c *dialConfig) { c.serverUIDs = append(c.serverUIDs, uid) }
}

// WithAnyServer turns off the check of the server's uid (tests, servers
// behind a proxy that runs as its own user).
func WithAnyServer() DialOption { return func(c *dialConfig) { c.anyServer = true } }

// WithoutDirectCalls keeps every call on the connection to the daemon:
// handles on a service whose driver runs in its own process take no
// direct call channel to it (see Handle.Direct).
func WithoutDirectCalls() DialOption { return func(c *dialConfig) { c.noDirect = true } }

// withDirect makes the connection the direct call channel of token.
func withDirect(token string) DialOption { return func(c *dialConfig) { c.direct = token } }

// withVersions overrides the versions offered in the hello (tests).
func withVersions(v ...int) DialOption { return func(c *dialConfig) { c.versions = v } }

// Client is a connection to the drvkit daemon (or to any server speaking
// the protocol of package wire).
type Client struct {
	// First, in one cache line, what reading a notification touches: a
	// fan-out to a thousand clients finds each client's memory cold, and
	// each line it spans is a miss.
	dec *wire.Decoder
	// The reading role (see reader).
	rmu      sync.Mutex // held by whoever reads; only ever TryLocked
	lastType string     // the last notification type, reused while it repeats
	carry    *carried
	// lastHandle is the handle the last notification was for, and its id
	// (the role's holder's, like handles): a client with one handle finds
	// it without the map, or the handle's memory.
	lastHandle   *Handle
	lastHandleID uint64
	onNote       func(*Handle, Notification) // cfg.onNote

	nc  net.Conn
	cfg dialConfig

	wmu sync.Mutex // serializes writes
	buf []byte

	spare atomic.Pointer[pendingReq] // an answered request's, reused by the next

	kick     chan struct{} // (1) wakes reader
	activity atomic.Uint64 // counts leaders' comings and goings: reader's quiet test
	wantRole atomic.Bool   // reader waits for a leader to give the role up
	// A leader's wait for a frame, which its ctx's end interrupts.
	lmu          sync.Mutex
	lwaiting     bool
	linterrupted bool

	mu      sync.Mutex
	pending map[uint64]*pendingReq
	handles map[uint64]*Handle // changed only by the reading role's holder, under mu
	nextID  uint64
	err     error // why the connection ended

	// Cancel frames waiting for the socket, written by one short-lived
	// goroutine so that a caller whose context ends never waits on a
	// socket the server does not read.
	cancels    []uint64
	cancelling bool
	cancelWG   sync.WaitGroup

	// slots bounds outstanding requests to the server's max_inflight
	// (nil: a version 1 server, no limit known). A request holds its slot
	// until its answer arrives, even after its caller gave up: past the
	// limit the server stops reading, and a cancel frame queued behind an
	// unread request would not be seen.
	slots chan struct{}

	done    chan struct{}
	welcome wire.WelcomeMsg

	// The direct call channels of this client's handles (under mu):
	// Close closes those still open.
	directs map[*Client]struct{}
}

type pendingReq struct {
	ch      chan result       // buffered: the one answer never blocks the reader
	onReply func(*wire.Frame) // runs on the reading goroutine before the result is delivered
	asm     assembly          // the parts received so far of a streamed reply (version 3)
}

type result struct {
	ctl  []byte
	data []byte
	err  error
}

// Dial connects to the server at path and performs the version handshake.
// When nothing listens there, the error matches ErrNoService.
func Dial(ctx context.Context, path string, opts ...DialOption) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		// net's own "dial unix <path>" would repeat what OpError says.
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Err != nil {
			err = ne.Err
		}
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			err = &noDaemon{err}
		}
		return nil, &OpError{Op: "dial", Path: path, Err: err}
	}
	// Before anything is sent: a socket in a directory others can write
	// to may be someone else's listener, waiting for what we send.
	if err := checkServer(nc, opts); err != nil {
		nc.Close()
		return nil, &OpError{Op: "dial", Path: path, Err: err}
	}
	all := append(opts[:len(opts):len(opts)], func(c *dialConfig) { c.path, c.opts = path, opts })
	c, err := newClient(ctx, nc, all...)
	if err != nil {
		return nil, &OpError{Op: "dial", Path: path, Err: err}
	}
	return c, nil
}

// checkServer refuses a server that is neither root nor the caller's own
// user (nor one WithServerUID names), from the credentials the kernel
// recorded for it (SO_PEERCRED; where the platform cannot tell, nothing
// is checked).
func checkServer(nc net.Conn, opts []DialOption) error {
	var cfg dialConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.anyServer {
		return nil
	}
	uid, ok, err := serverUID(nc)
	if err != nil {
		return fmt.Errorf("reading the server's credentials: %w", err)
	}
	if !ok || uid == 0 || int(uid) == os.Geteuid() || slices.Contains(cfg.serverUIDs, uid) {
		return nil
	}
	return fmt.Errorf("%w: the server runs as uid %d, neither root nor you (uid %d)", ErrUntrustedServer, uid, os.Geteuid())
}

// NewClient runs the handshake over an established connection nc and
// returns a client on it; the client owns nc from then on (Close closes
// it). It is how a server hands out in-process clients (see the Embed
// method of package userclient/server) without this package knowing the
// server; applications use Dial.
func NewClient(ctx context.Context, nc net.Conn, opts ...DialOption) (*Client, error) {
	c, err := newClient(ctx, nc, opts...)
	if err != nil {
		return nil, &OpError{Op: "handshake", Err: err}
	}
	return c, nil
}

// allVersions is what the client offers: every version it speaks, newest
// first.
func allVersions() []int {
	var v []int
	for n := wire.Version; n >= wire.MinVersion; n-- {
		v = append(v, n)
	}
	return v
}

// newClient runs the handshake on nc and starts the reader. nc is closed
// if it fails.
func newClient(ctx context.Context, nc net.Conn, opts ...DialOption) (*Client, error) {
	cfg := dialConfig{maxFrame: wire.DefaultMaxFrame, noteBuffer: 128, versions: allVersions(), maxReply: DefaultMaxReply}
	for _, o := range opts {
		o(&cfg)
	}
	c := &Client{nc: nc, cfg: cfg, onNote: cfg.onNote, dec: wire.NewDecoder(nc, cfg.maxFrame),
		pending: make(map[uint64]*pendingReq), handles: make(map[uint64]*Handle), done: make(chan struct{}),
		kick: make(chan struct{}, 1)}

	// The handshake is synchronous: nothing else may be sent before it.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	ctl, _ := json.Marshal(wire.HelloMsg{Protocol: wire.ProtocolName, Versions: cfg.versions, Client: cfg.name, Direct: cfg.direct})
	if err := c.write(&wire.Frame{Type: wire.TypeHello, ID: 1, Control: ctl}); err != nil {
		// A server that refused the connection (a limit) wrote why and
		// closed before the hello went out: its error frame is still
		// there to read, and says more than the broken pipe.
		if ctx.Err() == nil {
			_ = nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if f, rerr := c.dec.ReadFrame(); rerr == nil && f.Type == wire.TypeError {
				nc.Close()
				return nil, decodeError(&f)
			}
		}
		nc.Close()
		return nil, err
	}
	f, err := c.dec.ReadFrame()
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("handshake: %w", disconnected(err))
	}
	switch f.Type {
	case wire.TypeWelcome:
		if err := json.Unmarshal(f.Control, &c.welcome); err != nil {
			nc.Close()
			return nil, wire.Errorf(err, "bad welcome payload")
		}
		if !slices.Contains(cfg.versions, c.welcome.Version) || c.welcome.Version < wire.MinVersion || c.welcome.Version > wire.Version {
			nc.Close()
			return nil, wire.Errorf(nil, "server chose version %d, we offered %v", c.welcome.Version, cfg.versions)
		}
		if n := c.welcome.MaxInflight; n > 0 && c.welcome.Version >= 2 {
			c.slots = make(chan struct{}, n)
		}
		if cfg.direct != "" && !c.welcome.Direct {
			nc.Close()
			return nil, wire.Errorf(nil, "the server did not make this connection a direct call channel")
		}
	case wire.TypeError:
		nc.Close()
		return nil, decodeError(&f)
	default:
		nc.Close()
		return nil, wire.Errorf(nil, "server answered hello with %v", f.Type)
	}
	if !stop() {
		return nil, ctx.Err()
	}
	c.nextID = 1
	go c.reader()
	return c, nil
}

// Cred is how the server identified this client (from SO_PEERCRED).
func (c *Client) Cred() Cred {
	return Cred{PID: c.welcome.PID, UID: c.welcome.UID, GID: c.welcome.GID}
}

// Done is closed when the connection has ended; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended, nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection. The server closes every handle still open.
func (c *Client) Close() error {
	c.shutdown(ErrClosed)
	<-c.done
	c.cancelWG.Wait()
	c.mu.Lock()
	directs := c.directs
	c.directs = nil
	c.mu.Unlock()
	for dc := range directs {
		dc.Close()
	}
	return nil
}

// Version is the protocol version the server chose.
func (c *Client) Version() int { return c.welcome.Version }

// MaxInflight is the server's limit on this connection's outstanding
// requests, which the client keeps (callers beyond it wait for a slot);
// 0 if the server did not say (protocol version 1).
func (c *Client) MaxInflight() int { return cap(c.slots) }

func (c *Client) shutdown(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.nc.Close()
	c.wakeReader() // if nobody reads, to see the end
}

func (c *Client) write(f *wire.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := wire.AppendFrame(c.buf[:0], f, c.cfg.maxFrame)
	if err != nil {
		return err
	}
	_, err = c.nc.Write(b)
	if cap(b) <= 64<<10 {
		c.buf = b
	}
	return err
}

func decodeError(f *wire.Frame) error { return wire.DecodeError(f.Control) }

// The reading role: whoever holds rmu reads the socket, delivers answers
// and notifications and owns the decoder, lastType, carry and the handles
// map's changes. A caller that finds the role free after sending its
// request takes it (lead) and reads its own answer: no hand-off from
// another goroutine, which cost a call about a fifth of a socket round
// trip. The client's own goroutine (reader) holds the role when no caller
// does, so that notifications are read while nothing is called: callers
// lead while calls keep coming, and the reader takes over once a quietTick
// has passed without one (until then a notification waits in the socket).
// Whoever gives the role up while requests are pending wakes the reader.

// quietTick is how long calls must have stopped before the client's own
// goroutine reads again: the most a notification can wait after a call.
const quietTick = time.Millisecond

// carried is a notification a leader could not deliver without waiting:
// the reader delivers it before reading on.
type carried struct {
	h *Handle
	n Notification
}

// reader is the client's own goroutine: it reads the socket whenever no
// caller does, and ends once the connection has.
func (c *Client) reader() {
	quiet := time.NewTimer(quietTick)
	quiet.Stop()
	for {
		if c.rmu.TryLock() {
			c.wantRole.Store(false)
			if c.readInBackground() {
				return
			}
		}
		if !c.waitToRead(quiet) {
			return
		}
	}
}

// waitToRead waits, dormant while callers read their own answers, until
// it is time to try for the role again: a kick (a request is pending with
// nobody reading, or the role was given up while wanted), or a quietTick
// in which no caller came or went. False: the connection has ended.
func (c *Client) waitToRead(quiet *time.Timer) bool {
	if c.wantRole.Load() {
		// A caller has held the role for a whole tick (a long call): it
		// kicks us when it gives the role up.
		select {
		case <-c.kick:
			return true
		case <-c.done:
			return false
		}
	}
	seen := c.activity.Load()
	quiet.Reset(quietTick)
	defer quiet.Stop()
	for {
		select {
		case <-c.kick:
			return true
		case <-c.done:
			return false
		case <-quiet.C:
			if a := c.activity.Load(); a != seen {
				seen = a
				quiet.Reset(quietTick)
				continue
			}
			c.wantRole.Store(true)
			return true
		}
	}
}

// readInBackground reads the socket holding the role, until the
// connection ends (true) or it has delivered an answer and no other
// request is pending: the callers then read their own (it gives the role
// up first, so that the caller it wakes can take it).
func (c *Client) readInBackground() (ended bool) {
	if c.carry != nil {
		c.carry.h.deliver(c.carry.n)
		c.carry = nil
	}
	for {
		f, err := c.dec.ReadFrame()
		if err != nil {
			c.end(err)
			c.rmu.Unlock()
			return true
		}
		p, r, err := c.serveFrame(&f, true)
		if err != nil {
			c.end(err)
			c.rmu.Unlock()
			return true
		}
		if p == nil {
			continue
		}
		if c.pendingLen() > 0 {
			p.ch <- r
			runtime.Gosched() // its caller first: we have nothing to read yet
			continue
		}
		c.rmu.Unlock()
		p.ch <- r
		runtime.Gosched()
		if c.pendingLen() == 0 || !c.rmu.TryLock() {
			return false
		}
	}
}

// lead reads the socket for a caller holding the role, until its request
// p is answered, ctx ends, the connection ends, or a notification would
// have to wait for its application (the reader delivers it); then it gives
// the role up.
func (c *Client) lead(ctx context.Context, id uint64, p *pendingReq) {
	c.activity.Add(1)
	c.mu.Lock()
	waiting := c.pending[id] == p
	c.mu.Unlock()
	if !waiting {
		// Answered by the role's previous holder, between our write and
		// our taking the role.
		c.giveUpRole()
		return
	}
	done := ctx.Done()
	var stop func() bool
	if done != nil {
		stop = context.AfterFunc(ctx, c.interruptLeader)
	}
	for {
		if done != nil && !c.leaderWaits(ctx) {
			break
		}
		_, err := c.dec.Wait()
		if done != nil {
			c.leaderWaited()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					break
				}
				continue // a late interruption meant for an earlier leader
			}
			c.end(err)
			break
		}
		f, err := c.dec.ReadFrame()
		if err == nil {
			var q *pendingReq
			var r result
			if q, r, err = c.serveFrame(&f, false); q != nil {
				q.ch <- r
				if q == p {
					break
				}
			}
		}
		if err != nil {
			c.end(err)
			break
		}
		if c.carry != nil {
			break
		}
	}
	if stop != nil {
		stop()
	}
	c.giveUpRole()
}

// giveUpRole gives the reading role up, waking the client's goroutine if a
// request is left with nobody reading or it waits for the role.
func (c *Client) giveUpRole() {
	c.activity.Add(1)
	c.rmu.Unlock()
	if c.pendingLen() > 0 || c.wantRole.CompareAndSwap(true, false) {
		c.wakeReader()
	}
}

// leaderWaits says that a leader is about to wait for a frame (an
// interruption may then end the wait), unless ctx has ended.
func (c *Client) leaderWaits(ctx context.Context) bool {
	c.lmu.Lock()
	defer c.lmu.Unlock()
	if ctx.Err() != nil {
		return false
	}
	c.lwaiting = true
	return true
}

// leaderWaited ends the wait leaderWaits began, and the interruption if
// one came.
func (c *Client) leaderWaited() {
	c.lmu.Lock()
	c.lwaiting = false
	if c.linterrupted {
		c.linterrupted = false
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	c.lmu.Unlock()
}

// interruptLeader ends a leader's wait for a frame (its ctx ended): a read
// deadline in the past, set only while it waits between frames, so that
// no frame is cut.
func (c *Client) interruptLeader() {
	c.lmu.Lock()
	if c.lwaiting && !c.linterrupted {
		c.linterrupted = true
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	c.lmu.Unlock()
}

// wakeReader kicks the client's own goroutine into reading.
func (c *Client) wakeReader() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Client) pendingLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// serveFrame handles a frame read by the role's holder. An answer is
// returned with its request, for the holder to deliver; an error ends the
// connection. A leader (background false) does not wait for an
// application to take a notification: it leaves it in carry.
func (c *Client) serveFrame(f *wire.Frame, background bool) (*pendingReq, result, error) {
	switch f.Type {
	case wire.TypeReply, wire.TypeError:
		if f.ID == 0 {
			if f.Type == wire.TypeError {
				return nil, result{}, decodeError(f)
			}
			return nil, result{}, wire.Errorf(nil, "reply without a request id")
		}
		c.mu.Lock()
		p := c.pending[f.ID]
		delete(c.pending, f.ID)
		c.mu.Unlock()
		if p == nil {
			return nil, result{}, nil // not ours (the request failed to go out)
		}
		c.release()
		// The caller may have given up; the buffered channel then
		// drops the answer with the request.
		var r result
		if f.Type == wire.TypeError {
			r.err = decodeError(f)
			if p.asm.err != nil {
				// The cancel the overflow sent, most likely.
				r.err = p.asm.err
			}
		} else if r.ctl, r.data, r.err = p.asm.finish(f, c.cfg.maxReply); r.err == nil && p.onReply != nil {
			rf := *f
			rf.Control, rf.Data = r.ctl, r.data
			p.onReply(&rf)
		}
		return p, r, nil
	case wire.TypePart:
		if c.welcome.Version < 3 {
			return nil, result{}, wire.Errorf(nil, "part frame on a version %d connection", c.welcome.Version)
		}
		c.mu.Lock()
		p := c.pending[f.ID]
		c.mu.Unlock()
		if p != nil && !p.asm.add(f, c.cfg.maxReply) {
			// Too large: the rest is dropped as it comes, and the
			// server is asked to stop producing it.
			c.cancel(f.ID)
		}
		return nil, result{}, nil
	case wire.TypeNotification:
		m, err := wire.DecodeNotificationMsg(f.Control, c.lastType)
		if err != nil {
			return nil, result{}, wire.Errorf(err, "bad notification payload")
		}
		c.lastType = m.Type
		// No lock: the map is only ever changed by the role's holder
		// (the open and close replies' onReply, end).
		h := c.lastHandle
		if h == nil || c.lastHandleID != m.Handle {
			h = c.handles[m.Handle]
			c.lastHandle, c.lastHandleID = h, m.Handle
		}
		if h == nil {
			return nil, result{}, nil
		}
		n := Notification{Type: NotificationType(m.Type), Service: m.Service, Cause: m.Cause, RootCause: m.RootCause, Detail: m.Detail, Data: clone(f.Data)}
		switch {
		case c.onNote != nil:
			h.noteTerminated(&n)
			c.onNote(h, n)
		case background:
			h.deliver(n)
		case !h.tryDeliver(n):
			c.carry = &carried{h: h, n: n}
		}
		return nil, result{}, nil
	}
	return nil, result{}, wire.Errorf(nil, "unexpected %v frame from server", f.Type)
}

// end ends the connection, by the role's holder: every pending request
// fails with why, every handle ends. Only the role's holder closes done,
// so the check below is not racy.
func (c *Client) end(rerr error) {
	select {
	case <-c.done:
		return // ended by an earlier holder: this one read the closed socket
	default:
	}
	rerr = disconnected(rerr)
	c.mu.Lock()
	if c.err == nil {
		c.err = rerr
	}
	err := c.err
	pending := c.pending
	c.pending = nil
	handles := c.handles
	c.handles, c.lastHandle = nil, nil
	c.mu.Unlock()
	c.nc.Close()
	for _, p := range pending {
		c.release()
		p.ch <- result{err: err}
	}
	if c.carry != nil {
		c.carry.h.tryDeliver(c.carry.n) // or dropped: the handle ends, nobody waits for it
		c.carry = nil
	}
	for _, h := range handles {
		h.end(err)
	}
	close(c.done)
}

// disconnected maps the ways a connection ends under the client — the
// server closed it, or died with requests unread (a reset) or before a
// write (a broken pipe) — to ErrClosed, keeping the cause.
func disconnected(err error) error {
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		return fmt.Errorf("connection %w", ErrClosed)
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("connection %w by the server: %w", ErrClosed, err)
	}
	return err
}

// roundTrip sends f with a fresh request ID and waits for its answer. When
// ctx ends first, it returns ctx.Err() at once; the answer is dropped when
// it comes, and a call or admin request is cancelled on the server (a
// cancel frame, protocol version 2).
func (c *Client) roundTrip(ctx context.Context, f *wire.Frame, onReply func(*wire.Frame)) (result, error) {
	return c.roundTripTo(ctx, f, onReply, nil)
}

// roundTripTo is roundTrip with the reply's control bytes written to sink
// as they arrive (nil: assembled).
func (c *Client) roundTripTo(ctx context.Context, f *wire.Frame, onReply func(*wire.Frame), sink io.Writer) (result, error) {
	if err := c.acquire(ctx); err != nil {
		return result{}, err
	}
	if err := ctx.Err(); err != nil {
		// A slot and an ended context were both ready: do not send what
		// the caller gave up on.
		c.release()
		return result{}, err
	}
	p := c.spare.Swap(nil)
	if p == nil {
		p = &pendingReq{ch: make(chan result, 1)}
	}
	p.onReply, p.asm = onReply, assembly{sink: sink}
	c.mu.Lock()
	if c.pending == nil {
		err := c.err
		c.mu.Unlock()
		c.release()
		return result{}, err
	}
	c.nextID++
	f.ID = c.nextID
	c.pending[f.ID] = p
	c.mu.Unlock()
	if err := c.write(f); err != nil {
		c.forget(f.ID)
		if errors.Is(err, ErrProtocol) {
			return result{}, err // too large: the connection is fine
		}
		err = disconnected(err)
		c.shutdown(err)
		return result{}, err
	}
	if c.rmu.TryLock() {
		if c.carry == nil {
			c.lead(ctx, f.ID, p)
		} else {
			c.giveUpRole() // the reader delivers the carried notification first
		}
	}
	// An answer already here wins over a context that ended meanwhile
	// (a select would pick either).
	select {
	case r := <-p.ch:
		c.recycle(p)
		return r, r.err
	default:
	}
	select {
	case r := <-p.ch:
		c.recycle(p)
		return r, r.err
	case <-ctx.Done():
		// The request stays pending: its answer releases its slot (and
		// Open's onReply cleans up a handle opened meanwhile).
		if f.Type == wire.TypeCall || f.Type == wire.TypeAdmin || f.Type == wire.TypeOpen {
			c.cancel(f.ID)
		}
		if sink != nil {
			// The reader writes to sink until the answer: the caller's
			// writer is not written after it returns.
			select {
			case <-p.ch:
			case <-c.done:
			}
		}
		return result{}, ctx.Err()
	}
}

// recycle keeps p, answered and no longer anyone's, for the next request:
// nothing sends on its channel any more.
func (c *Client) recycle(p *pendingReq) {
	*p = pendingReq{ch: p.ch}
	c.spare.Store(p)
}

// acquire takes an outstanding-request slot.
func (c *Client) acquire(ctx context.Context) error {
	if c.slots == nil {
		return nil
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
}

// release gives back the slot of a request that is no longer pending.
func (c *Client) release() {
	if c.slots != nil {
		<-c.slots
	}
}

// forget drops a request that never went out.
func (c *Client) forget(id uint64) {
	c.mu.Lock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ok {
		c.release()
	}
}

// cancel queues a cancel frame for request id if it is still waiting for
// its answer and the server speaks version 2. It never blocks.
func (c *Client) cancel(id uint64) {
	if c.welcome.Version < 2 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[id]; !ok {
		return // answered already, or the connection ended
	}
	c.cancels = append(c.cancels, id)
	if !c.cancelling {
		c.cancelling = true
		c.cancelWG.Add(1)
		go c.sendCancels()
	}
}

// sendCancels writes queued cancel frames until none is left. A write
// error ends it: the reader sees the connection end too.
func (c *Client) sendCancels() {
	defer c.cancelWG.Done()
	var b []byte
	for {
		c.mu.Lock()
		ids := c.cancels
		c.cancels = nil
		if len(ids) == 0 || c.pending == nil {
			c.cancelling = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		b = b[:0]
		for _, id := range ids {
			b, _ = wire.AppendFrame(b, &wire.Frame{Type: wire.TypeCancel, ID: id}, c.cfg.maxFrame)
		}
		c.wmu.Lock()
		_, err := c.nc.Write(b)
		c.wmu.Unlock()
		if err != nil {
			c.mu.Lock()
			c.cancels = nil
			c.cancelling = false
			c.mu.Unlock()
			return
		}
	}
}

// Ping checks that the server answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.roundTrip(ctx, &wire.Frame{Type: wire.TypePing}, nil)
	if err != nil {
		return &OpError{Op: "ping", Err: err}
	}
	return nil
}

// Open opens the first service matching m that the policy allows. It fails
// with ErrNoService if nothing matches and ErrPermission if something
// matches but the policy refuses it.
func (c *Client) Open(ctx context.Context, m Match) (*Handle, error) {
	return c.open(ctx, wire.OpenMsg{Match: m})
}

// OpenWait is Open for a service that may not be there yet: when nothing
// matches, the daemon waits for a matching service to be published or for
// its driver to finish starting, and opens it then — no polling. It gives up
// when ctx ends (the daemon is told, and a service opened meanwhile is
// closed). It needs protocol version 2; a version 1 daemon answers at once,
// as Open.
func (c *Client) OpenWait(ctx context.Context, m Match) (*Handle, error) {
	return c.open(ctx, wire.OpenMsg{Match: m, Wait: true})
}

func (c *Client) open(ctx context.Context, msg wire.OpenMsg) (*Handle, error) {
	opErr := func(err error) error { return &OpError{Op: "open", Match: &msg.Match, Err: err} }
	ctl, err := json.Marshal(msg)
	if err != nil {
		return nil, opErr(err)
	}
	var hp atomic.Pointer[Handle]
	var abandoned atomic.Bool
	var token string // the direct call channel offered (written before the result is delivered)
	r, err := c.roundTrip(ctx, &wire.Frame{Type: wire.TypeOpen, Control: ctl}, func(f *wire.Frame) {
		// Runs on the reading goroutine, before any notification for the
		// handle can be read, even if the caller already gave up.
		var rep wire.OpenReply
		if json.Unmarshal(f.Control, &rep) != nil {
			return
		}
		token = rep.Direct
		buffer := c.cfg.noteBuffer
		if c.cfg.onNote != nil {
			buffer = 0 // the handler gets them: the channel is only closed
		}
		h := &Handle{c: c, id: rep.Handle, info: rep.Service, clientID: rep.Client,
			notes: make(chan Notification, buffer), terminated: make(chan struct{})}
		c.mu.Lock()
		if c.handles != nil {
			c.handles[h.id] = h
		}
		c.mu.Unlock()
		hp.Store(h)
		if abandoned.Load() {
			go h.Close()
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			// The server may still open it: whoever sees both the handle
			// and the abandonment closes it.
			abandoned.Store(true)
			if h := hp.Load(); h != nil {
				go h.Close()
			}
		}
		return nil, opErr(err)
	}
	h := hp.Load()
	if h == nil {
		return nil, opErr(wire.Errorf(nil, "bad open reply %q", r.ctl))
	}
	if token != "" && c.cfg.path != "" && !c.cfg.noDirect {
		c.dialDirect(ctx, h, token)
	}
	return h, nil
}

// dialDirect makes the direct call channel h was offered: a second
// connection to the daemon, which hands it to the driver's process. If
// that fails, h's calls simply go through the daemon.
func (c *Client) dialDirect(ctx context.Context, h *Handle, token string) {
	dc, err := Dial(ctx, c.cfg.path, append(c.cfg.opts[:len(c.cfg.opts):len(c.cfg.opts)], withDirect(token))...)
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.err != nil || h.closed.Load() {
		c.mu.Unlock()
		dc.Close()
		return
	}
	if c.directs == nil {
		c.directs = make(map[*Client]struct{})
	}
	c.directs[dc] = struct{}{}
	h.direct.Store(dc)
	c.mu.Unlock()
}

// Admin makes an administrative call (see the Admin* constants); args is
// marshalled as JSON. It returns the result JSON and raw data. Like Call,
// an ended ctx returns ctx.Err() at once and cancels the operation's
// context on the server (terminate and unload stop waiting).
func (c *Client) Admin(ctx context.Context, op string, args any, data []byte) (json.RawMessage, []byte, error) {
	m := wire.AdminMsg{Op: op}
	if args != nil {
		a, err := json.Marshal(args)
		if err != nil {
			return nil, nil, &OpError{Op: "admin", Method: op, Err: err}
		}
		m.Args = a
	}
	ctl, _ := json.Marshal(m)
	r, err := c.roundTrip(ctx, &wire.Frame{Type: wire.TypeAdmin, Control: ctl, Data: data}, nil)
	if err != nil {
		return nil, nil, &OpError{Op: "admin", Method: op, Err: err}
	}
	return r.ctl, r.data, nil
}

// AdminTo is Admin with the reply's JSON written to w as it arrives
// instead of assembled in memory: a reply of any size costs the client one
// frame. What was written before an error stays written. w is written on
// the connection's reader, so a slow w holds up this client's other
// replies and notifications meanwhile.
func (c *Client) AdminTo(ctx context.Context, op string, args any, data []byte, w io.Writer) ([]byte, error) {
	m := wire.AdminMsg{Op: op}
	if args != nil {
		a, err := json.Marshal(args)
		if err != nil {
			return nil, &OpError{Op: "admin", Method: op, Err: err}
		}
		m.Args = a
	}
	ctl, _ := json.Marshal(m)
	r, err := c.roundTripTo(ctx, &wire.Frame{Type: wire.TypeAdmin, Control: ctl, Data: data}, nil, w)
	if err != nil {
		return nil, &OpError{Op: "admin", Method: op, Err: err}
	}
	return r.data, nil
}

// Handle is one open service.
type Handle struct {
	c        *Client
	id       uint64
	info     ServiceInfo
	clientID uint64

	notes      chan Notification
	wanted     atomic.Bool
	termOnce   sync.Once
	terminated chan struct{}
	// unplugged: the ServiceIsTerminated that closed terminated had the
	// root cause "unplug" (written before the close, read after it).
	unplugged bool
	closed    atomic.Bool
	// direct is the call channel to the driver's own process, if the
	// daemon offered one (protocol version 4).
	direct atomic.Pointer[Client]
}

// causeUnplug is the root cause of a termination that began with the
// device's removal (driver.CauseUnplug's text on the wire).
const causeUnplug = "unplug"

// Service describes the opened service.
func (h *Handle) Service() ServiceInfo { return h.info }

// Direct reports whether h's calls go straight to the process of the
// service's driver, on a call channel the daemon handed over, rather than
// through the daemon (a bundle's driver built with the Go SDK; see
// WithoutDirectCalls). Everything else — notifications, Close, the
// service's lifecycle — goes through the daemon either way.
func (h *Handle) Direct() bool { return h.direct.Load() != nil }

// ClientID is the ID of the user-client service the server created (0 if
// the backend has none).
func (h *Handle) ClientID() uint64 { return h.clientID }

// Terminated is closed when the service is terminated (or the connection
// ends): calls then fail with ErrTerminated (and ErrNoDevice when the
// device was unplugged).
func (h *Handle) Terminated() <-chan struct{} { return h.terminated }

// Notifications returns the handle's notifications. The channel is closed
// when the handle is closed or the connection ends. Once Notifications has
// been called, the application must keep reading: when the buffer is full
// the client stops reading the socket, and the server disconnects a client
// that falls too far behind. Before the first call, notifications beyond
// the buffer are dropped oldest first (termination is still seen through
// Terminated and ErrTerminated). A client dialled WithNotificationHandler
// passes them to its handler instead: the channel then only closes.
func (h *Handle) Notifications() <-chan Notification {
	h.wanted.Store(true)
	return h.notes
}

// noteTerminated closes Terminated when n says the service is terminated.
func (h *Handle) noteTerminated(n *Notification) {
	if n.Type == ServiceIsTerminated {
		unplugged := n.RootCause == causeUnplug
		h.termOnce.Do(func() {
			h.unplugged = unplugged
			close(h.terminated)
		})
	}
}

// deliver hands n to the application: once it has asked for the channel
// (wanted), n waits for room, and the socket is not read meanwhile;
// before that, the oldest is dropped to make room.
func (h *Handle) deliver(n Notification) {
	if !h.tryDeliver(n) {
		h.notes <- n // back-pressure on the socket
	}
}

// tryDeliver is deliver for a leader, which does not wait for the
// application: false if n would have to wait.
func (h *Handle) tryDeliver(n Notification) bool {
	h.noteTerminated(&n)
	for {
		select {
		case h.notes <- n:
			return true
		default:
		}
		if h.wanted.Load() {
			return false
		}
		select {
		case <-h.notes:
		default:
		}
	}
}

// end runs on the reading goroutine when the handle can get nothing more.
func (h *Handle) end(error) {
	h.termOnce.Do(func() { close(h.terminated) })
	close(h.notes)
}

// Call calls the driver method named method with in and returns its output.
// It fails with ErrTerminated if the service went away — and with
// ErrNoDevice too if it went away because its device was unplugged, whether
// the call met the vanished device or only the termination that followed —
// ErrNoMethod if the driver has no such method, ErrClosed after Close. Once the connection has
// ended (the daemon died), the error matches both ErrTerminated and
// ErrClosed, with the connection's error.
//
// If ctx ends before the answer, Call returns ctx.Err() at once and the
// server cancels the context the driver method runs with (a cancel frame,
// sent in the background; servers speaking protocol version 1 only let the
// method run on). The method's late answer is dropped.
func (h *Handle) Call(ctx context.Context, method string, in []byte) ([]byte, error) {
	opErr := func(err error) error { return &OpError{Op: "call", Service: &h.info, Method: method, Err: err} }
	if h.closed.Load() {
		return nil, opErr(ErrClosed)
	}
	select {
	case <-h.terminated:
		if cerr := h.c.Err(); cerr != nil {
			// The connection ended, not (as far as we know) the service:
			// say so too (errors.Is ErrClosed).
			return nil, opErr(fmt.Errorf("%w: %w", ErrTerminated, cerr))
		}
		if h.unplugged {
			return nil, opErr(errUnplugged)
		}
		return nil, opErr(ErrTerminated)
	default:
	}
	// On the stack: the writer copies the frame into its buffer.
	var buf [64]byte
	ctl := wire.AppendHandleMsg(buf[:0], wire.HandleMsg{Handle: h.id, Method: method})
	c := h.c
	dc := h.direct.Load()
	if dc != nil {
		c = dc
	}
	r, err := c.roundTrip(ctx, &wire.Frame{Type: wire.TypeCall, Control: ctl, Data: in}, nil)
	if err != nil {
		if dc != nil && dc.Err() != nil && ctx.Err() == nil && !h.closed.Load() {
			// The driver's process closed the channel: it stopped or
			// died, and the service with it (the daemon says why).
			return nil, opErr(fmt.Errorf("%w: the driver's process closed the call channel: %w", ErrTerminated, dc.Err()))
		}
		return nil, opErr(err)
	}
	return r.data, nil
}

// Close closes the handle: the server closes the provider and frees the user
// client. Closing twice is a no-op.
func (h *Handle) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	ctl := wire.AppendHandleMsg(nil, wire.HandleMsg{Handle: h.id})
	_, err := h.c.roundTrip(context.Background(), &wire.Frame{Type: wire.TypeClose, Control: ctl}, func(*wire.Frame) {
		h.c.mu.Lock()
		_, ok := h.c.handles[h.id]
		delete(h.c.handles, h.id)
		if h.c.lastHandle == h {
			h.c.lastHandle = nil
		}
		h.c.mu.Unlock()
		if ok {
			h.end(nil)
		}
	})
	if dc := h.direct.Swap(nil); dc != nil {
		// After the daemon's close, which closed the channel in the
		// driver's process: a call still on it gets its answer first.
		h.c.mu.Lock()
		delete(h.c.directs, dc)
		h.c.mu.Unlock()
		dc.Close()
	}
	if err == nil || errors.Is(err, ErrClosed) {
		return nil // ErrClosed: the connection is gone, the server closed it already
	}
	return &OpError{Op: "close", Service: &h.info, Err: err}
}

// clone copies b out of the decoder's buffer (nil if empty).
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
