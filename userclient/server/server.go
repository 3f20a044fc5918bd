package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/internal/lazyctx"
	"github.com/drvkit/drvkit/internal/ratelog"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// Config configures a Server. Only Path is required.
type Config struct {
	// Path of the Unix socket. A stale socket file there (nothing answers
	// on it) is removed; anything else that is not a socket is left alone
	// and Listen fails with ErrNotSocket.
	Path string
	// Mode of the socket file; 0660 if zero.
	Mode os.FileMode
	// GID, if not negative, becomes the socket file's group (so that a
	// group of applications can connect with mode 0660). Use -1 to keep
	// the process's group; 0 is root's group.
	GID int
	// Policy decides who may open what. The zero Policy admits uid 0 only.
	Policy Policy
	// MaxFrame limits a frame's length field in both directions
	// (wire.DefaultMaxFrame if zero).
	MaxFrame int
	// QueueFrames and QueueBytes bound what is queued for one connection
	// (replies and notifications) before it is considered not reading and
	// disconnected. Defaults: 1024 frames, 8 MiB.
	QueueFrames int
	QueueBytes  int
	// MaxInflight bounds concurrent requests per connection; a connection
	// that sends more is simply not read from until one finishes
	// (default 64).
	MaxInflight int
	// HandshakeTimeout is how long a new connection may take to send its
	// hello (default 10s).
	HandshakeTimeout time.Duration
	// Limits bound what one peer can make the server hold; the zero
	// value has safe defaults (see Limits).
	Limits Limits
	// Admin serves administrative calls; nil answers them with userclient.ErrNoMethod.
	Admin AdminFunc
	// OnDisconnect, if set, is told why each connection ended (after its
	// sessions got ClientDied or Close).
	OnDisconnect func(cred userclient.Cred, reason error)
	// Log receives connection-level errors; nil discards them.
	Log *slog.Logger
	// NoDirectCalls keeps every call on the daemon's path. By default a
	// handle on a service whose driver runs in a process of its own and
	// serves direct calls (a Session that is a DirectSession: a bundle of
	// driver/host with the Go SDK) is offered a call channel to that
	// process (protocol version 4): its calls then cross one process
	// boundary instead of two. The daemon still owns the handle's
	// lifecycle — opens, notifications, closes, the channel's end — but
	// does not see the calls themselves, nor bound them per user.
	NoDirectCalls bool
	// NoIOURing writes each notification of a fan-out with a write(2) of
	// its own. By default those a driver sends to many clients at once go
	// out together, through io_uring, in one system call per 64 clients;
	// where io_uring is missing or forbidden (older kernels,
	// kernel.io_uring_disabled, a container's seccomp filter) the server
	// writes one by one by itself, and logs why once.
	NoIOURing bool
	// Audit receives one line per open and administrative decision,
	// granted or refused, with the peer's pid, uid and gid and what it
	// asked (the audit trail); nil uses Log.
	Audit *slog.Logger
}

func (c *Config) defaults() {
	if c.Mode == 0 {
		c.Mode = 0o660
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = wire.DefaultMaxFrame
	}
	if c.QueueFrames <= 0 {
		c.QueueFrames = 1024
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 8 << 20
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 64
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Audit == nil {
		c.Audit = c.Log
	}
	c.Limits.defaults()
}

// Limits bound the resources a peer can make the server hold, in the
// manner of dbus-daemon's limits. Zero means the default; a negative
// duration turns that timeout off.
type Limits struct {
	// MaxConns is the number of connections served at once (default
	// 1024). Root gets RootReserve connections beyond it, so that an
	// administrator can still connect while others exhausted the rest.
	MaxConns int
	// MaxConnsPerUID bounds one user's connections, root's too (default
	// 128).
	MaxConnsPerUID int
	// MaxIncomplete bounds connections that have not completed the
	// handshake (default 64).
	MaxIncomplete int
	// MaxHandles bounds open handles per connection (default 256);
	// MaxHandlesPerUID over all of one user's connections (default 1024):
	// what one user can make every close of a shared service fan out to.
	MaxHandles       int
	MaxHandlesPerUID int
	// MaxInflightPerUID bounds the calls in flight over all of one user's
	// connections (default 256); past it that user's connections are not
	// read until one finishes. A call blocked in a driver (SG_IO)
	// holds an OS thread: without this one user could make the daemon
	// reach the runtime's thread limit.
	MaxInflightPerUID int
	// MaxInflightTotal bounds the calls in flight over all connections
	// (default 4096), far below the runtime's 10,000 threads however many
	// users take their share.
	MaxInflightTotal int
	// MaxWaitingOpens bounds opens waiting for a service to appear, per
	// connection (default 16); MaxWaitingOpensTotal over all connections
	// (default 256).
	MaxWaitingOpens      int
	MaxWaitingOpensTotal int
	// FrameTimeout is how long the rest of a frame may take once its first
	// byte arrived (default 10s).
	FrameTimeout time.Duration
	// IdleTimeout closes a connection with no open handle and no request
	// in flight that sent nothing for this long (default 2 minutes).
	IdleTimeout time.Duration
}

// RootReserve is how many connections uid 0 may open beyond MaxConns.
const RootReserve = 16

// DefaultLimits are the limits a zero Limits gets.
var DefaultLimits = Limits{
	MaxConns: 1024, MaxConnsPerUID: 128, MaxIncomplete: 64, MaxHandles: 256, MaxHandlesPerUID: 1024,
	MaxInflightPerUID: 256, MaxInflightTotal: 4096,
	MaxWaitingOpens: 16, MaxWaitingOpensTotal: 256,
	FrameTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
}

func (l *Limits) defaults() {
	d := DefaultLimits
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&l.MaxConns, d.MaxConns)
	setInt(&l.MaxConnsPerUID, d.MaxConnsPerUID)
	setInt(&l.MaxIncomplete, d.MaxIncomplete)
	setInt(&l.MaxHandles, d.MaxHandles)
	setInt(&l.MaxHandlesPerUID, d.MaxHandlesPerUID)
	setInt(&l.MaxInflightPerUID, d.MaxInflightPerUID)
	setInt(&l.MaxInflightTotal, d.MaxInflightTotal)
	setInt(&l.MaxWaitingOpens, d.MaxWaitingOpens)
	setInt(&l.MaxWaitingOpensTotal, d.MaxWaitingOpensTotal)
	if l.FrameTimeout == 0 {
		l.FrameTimeout = d.FrameTimeout
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = d.IdleTimeout
	}
}

// drainGrace is how long a failing connection's queued frames may take to
// be written.
const drainGrace = 100 * time.Millisecond

// Server serves applications on a Unix socket.
type Server struct {
	backend Backend
	cfg     Config
	ln      *net.UnixListener

	mu         sync.Mutex
	conns      map[*conn]struct{}
	perUID     map[uint32]*user // by uid
	inflight   chan struct{}    // a slot per call in flight, all users (Limits.MaxInflightTotal)
	incomplete int              // connections before their handshake
	closed     bool
	wg         sync.WaitGroup

	sessions atomic.Int64
	waiting  atomic.Int64 // opens waiting for a service, over all connections
	refused  atomic.Int64 // connections refused at accept by a limit
	timeouts atomic.Int64 // connections ended by the frame or idle timeout
	coalesce atomic.Int64 // ServiceWasClosed notifications merged into one queued
	handover atomic.Int64 // calls that had the connection's reading taken over (serveInline)
	watch    inlineWatch
	tails    atomic.Int64 // direct writes the socket took only part of (tests)

	refusedLog ratelog.Limiter

	// Direct call channels offered in open replies and not yet taken, by
	// token (under mu).
	offers map[string]*directOffer

	// A fan-out's notifications go out together (sendbatch.go).
	rings        ringPool
	fanoutRing   atomic.Int64 // Stats.FanoutRing
	fanoutWrite  atomic.Int64 // Stats.FanoutWrite
	sendBatches  sync.Pool
	newSendBatch func() driver.BatchFlusher
}

// directOffer is a handle's offer of a direct call channel: a connection
// from the same process that says its token becomes the channel.
type directOffer struct {
	owner *conn
	e     *entry // the handle's entry (e.handle its number)
}

// user is what one uid holds over all its connections.
type user struct {
	conns    int           // under Server.mu
	handles  atomic.Int64  // open or opening
	inflight chan struct{} // a slot per request in flight
}

// addConnLocked counts a connection of uid; s.mu is held.
func (s *Server) addConnLocked(uid uint32) *user {
	u := s.perUID[uid]
	if u == nil {
		u = &user{inflight: make(chan struct{}, s.cfg.Limits.MaxInflightPerUID)}
		s.perUID[uid] = u
	}
	u.conns++
	return u
}

// Stats is a snapshot of a server's load.
type Stats struct {
	Conns     int   // connections being served
	Sessions  int   // open handles over all connections
	Refused   int64 // connections refused by a limit since the start
	Timeouts  int64 // connections ended by the frame or idle timeout
	Coalesced int64 // ServiceWasClosed notifications merged into a queued one
	// Handovers counts calls that had the connection's reading taken over
	// while they ran: a call runs on the goroutine that read it, and the
	// reading went on in its standby goroutine or, for a call not expected
	// to block, in one the inline watch started (see serveInline).
	Handovers int64
	// FanoutRing and FanoutWrite count the notifications of fan-outs
	// (a driver's message to its clients) written through io_uring, many
	// per system call, and with a write(2) each (io_uring off or
	// unavailable, a lone client, or every ring busy).
	FanoutRing, FanoutWrite int64
}

// Listen creates the socket and starts serving b.
func Listen(b Backend, cfg Config) (*Server, error) {
	cfg.defaults()
	if cfg.Path == "" {
		return nil, &OpError{Op: "listen", Err: errors.New("empty socket path")}
	}
	opErr := func(err error) error { return &OpError{Op: "listen", Path: cfg.Path, Err: err} }
	if err := removeStale(cfg.Path); err != nil {
		return nil, opErr(err)
	}
	ln, err := listenUnix(cfg.Path, cfg.Mode, cfg.GID)
	if err != nil {
		return nil, opErr(err)
	}
	s := &Server{backend: b, cfg: cfg, ln: ln, conns: make(map[*conn]struct{}), perUID: make(map[uint32]*user),
		inflight: make(chan struct{}, cfg.Limits.MaxInflightTotal)}
	s.newSendBatch = s.makeSendBatch
	s.rings.log = s.cfg.Log
	if cfg.NoIOURing {
		s.rings.err = errRingsOff
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// removeStale removes a socket file nobody answers on. It never removes
// something that is not a socket, nor a socket a live server listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%w (%v)", ErrNotSocket, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return ErrAddrInUse
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probing existing socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	return nil
}

// Addr is the socket path.
func (s *Server) Addr() string { return s.cfg.Path }

// Stats reports current connections and sessions.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return Stats{Conns: n, Sessions: int(s.sessions.Load()), Refused: s.refused.Load(),
		Timeouts: s.timeouts.Load(), Coalesced: s.coalesce.Load(), Handovers: s.handover.Load(),
		FanoutRing: s.fanoutRing.Load(), FanoutWrite: s.fanoutWrite.Load()}
}

// Close stops accepting, ends every connection (each session gets
// ClientDied), waits for the server's goroutines and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range conns {
		c.fail(fmt.Errorf("%w: server shutting down", wire.ErrClosed), wire.CodeClosed)
	}
	s.wg.Wait()
	s.rings.close()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning, as
			// net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.cfg.Log.Warn("accept", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		// The credentials first: the limits are per user, and a refused
		// connection must cost no goroutine.
		cred, err := peerCred(nc)
		if err != nil {
			s.cfg.Log.Warn("reading peer credentials", "err", err)
			nc.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if why := s.admitLocked(cred); why != "" {
			s.mu.Unlock()
			s.refuse(nc, cred, why)
			continue
		}
		c := newConn(s, nc, cred)
		s.conns[c] = struct{}{}
		c.user = s.addConnLocked(cred.UID)
		s.incomplete++
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// admitLocked says why a new connection from cred is over a limit, or "".
func (s *Server) admitLocked(cred userclient.Cred) string {
	l := &s.cfg.Limits
	maxConns := l.MaxConns
	if cred.UID == 0 {
		maxConns += RootReserve
	}
	if u := s.perUID[cred.UID]; u != nil && u.conns >= l.MaxConnsPerUID {
		return fmt.Sprintf("uid %d already has %d connections", cred.UID, l.MaxConnsPerUID)
	}
	if len(s.conns) >= maxConns {
		return fmt.Sprintf("the server has %d connections", len(s.conns))
	}
	if s.incomplete >= l.MaxIncomplete {
		return fmt.Sprintf("%d connections have not completed their handshake", s.incomplete)
	}
	return ""
}

// refuse tells a connection over a limit why, without waiting for it, and
// closes it.
func (s *Server) refuse(nc *net.UnixConn, cred userclient.Cred, why string) {
	s.refused.Add(1)
	if n, ok := s.refusedLog.Allow(); ok {
		s.cfg.Log.Warn("connection refused", "pid", cred.PID, "uid", cred.UID, "why", why, "suppressed", n)
	}
	ctl, _ := json.Marshal(wire.ErrorMsg{Code: wire.CodeLimit, Message: wire.ErrLimit.Error() + ": " + why})
	f := wire.Frame{Type: wire.TypeError, Flags: wire.FlagFatal, Control: ctl}
	if b, err := wire.AppendFrame(nil, &f, max(s.cfg.MaxFrame, f.Size())); err == nil {
		// A new socket's buffer has room: this does not block.
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = nc.Write(b)
	}
	nc.Close()
}

// conn is one application connection.
type conn struct {
	srv  *Server
	nc   *net.UnixConn
	cred userclient.Cred
	dec  *wire.Decoder

	ctx    context.Context // cancelled when the connection ends: in-flight calls stop
	cancel context.CancelFunc
	grace  time.Duration // how long the queued frames may take to leave once fail ran (set before quit closes)

	// From here to scratch, what a notification's direct write touches,
	// side by side: a fan-out to a thousand clients touches each one's
	// connection once, and each cache line it spans is a miss.
	//
	// The writer's queue: a slice, not a channel sized for the limit, so
	// that an idle connection costs no queue memory.
	qmu      sync.Mutex
	queue    []outFrame
	outBytes int // bytes queued (under qmu)
	// writing: someone owns the socket's write side (under qmu) — the
	// writer with a batch, or a goroutine writing a frame directly. A
	// frame queued while nobody writes and nothing is queued is written at
	// once by the goroutine that queued it, with one non-blocking write(2)
	// (see push): no hand-off to the writer goroutine, which takes over
	// only what the socket did not take. writerWaits: the writer waits for
	// a direct write to end (under qmu).
	writing     bool
	writerWaits bool
	// directOn: the write side is a direct write's (under qmu); the
	// writer closes the socket only once it is not.
	directOn bool
	dead     atomic.Bool // fail ran: quit is closed, or about to be
	// wfd is the socket's descriptor, written to directly with write(2),
	// past net's poller (-1: no direct writes). Safe because the only
	// close of the socket is the writer's, which waits for a direct write
	// to end first: the number cannot be reused under one.
	wfd int
	// scratch is where sendNotification encodes a frame it writes
	// directly, reused from one to the next (owned while writing).
	scratch []byte

	wake chan struct{} // (1) something was queued
	// A streamed reply (version 3) waits for room in the queue instead of
	// overflowing it: the writer closes space (under qmu) when it took
	// frames out while someone waits.
	space        chan struct{}
	spaceWaiters int           // under qmu
	wbufs        net.Buffers   // the batch being written (the writer's only)
	quit         chan struct{} // closed by fail: the writer drains and closes
	writerWG     sync.WaitGroup
	reqWG        sync.WaitGroup
	sem          chan struct{}

	failOnce sync.Once
	reason   error

	version int // negotiated in the handshake; read only by the reader after it

	complete bool  // past the handshake (the reader's only)
	embedded bool  // Server.Embed's: no idle timeout
	user     *user // the peer's uid's share

	mu       sync.Mutex
	sessions map[uint64]*entry
	opening  int // opens that passed the handle limit and have no handle yet
	waiting  int // opens waiting for a service
	next     uint64
	ended    bool
	watch    io.Closer // the pidfd watch, closed at the end
	// inflight holds the call and admin requests being served on a
	// version 2 connection, by request id, so that a cancel frame can
	// cancel their context. An entry is added by the reader while the
	// request holds a sem slot and removed before the slot is given back:
	// it never holds more than MaxInflight entries.
	inflight map[uint64]*inflightReq

	// The reading side: whoever reads the socket owns rs. A call is run by
	// the goroutine that read it, and the reading goes on in a standby
	// goroutine if the call is still running when the standby runs
	// (serveInline).
	rs     readState
	inline atomic.Uint64 // generation<<2 | inlineReading, inlineServing or inlineHandedOff
	// blocking counts down the calls still served with a standby after
	// one blocked (serveInline); watched: the connection is in the
	// server's inline watch.
	blocking atomic.Int32
	watched  atomic.Bool
}

// readState is the read loop's state, passed on with the reading.
type readState struct {
	handshaken bool
	idleUntil  time.Time // the read deadline set for the wait between frames; zero: none set
	lastMethod string    // the last method called, reused while it repeats
}

// The phases of inline serving (conn.inline's low bits).
const (
	inlineReading   = 0 // the reader reads
	inlineServing   = 1 // the reader runs a call; its standby may take the reading over
	inlineHandedOff = 2 // the standby reads; the old reader ends after its call
)

// inflightReq is a cancellable request in flight.
type inflightReq struct {
	// The connection's context, also ended by a cancel frame or the
	// request's end; lazy, because most methods never wait on it.
	ctx       lazyctx.Context
	cancelled atomic.Bool // a cancel frame named it
}

// entry is one open handle.
type entry struct {
	handle uint64
	sess   Session
	offer  string // the direct channel's token while it is not taken (under Server.mu)
	c      *conn  // where its notifications go
	mu     sync.Mutex
	ready  bool // the open reply is queued: notifications may follow it (under mu)
	// readyFast is ready, set last: a notification that sees it set goes
	// out without taking mu (a fan-out would take it once per client).
	readyFast atomic.Bool
	pending   []userclient.Notification // notifications that came before the open reply

	// A ServiceWasClosed queued and not yet written (guarded by the
	// connection's qmu): later ones are merged into it.
	closedQueued bool
	closedCount  int
	closedLast   uint64 // the last closer
}

// outFrame is a queued frame: encoded bytes, or (closed set) the
// ServiceWasClosed summary of an entry, encoded when it is written. tail
// marks the rest of a frame a direct write began: never a frame header.
type outFrame struct {
	b      []byte
	closed *entry
	tail   bool
}

// summarySize is what a queued ServiceWasClosed summary counts for against
// QueueBytes before it is encoded.
const summarySize = 96

func newConn(s *Server, nc *net.UnixConn, cred userclient.Cred) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv: s, nc: nc, ctx: ctx, cancel: cancel, cred: cred,
		dec:      wire.NewDecoder(nc, s.cfg.MaxFrame),
		wake:     make(chan struct{}, 1),
		space:    make(chan struct{}),
		quit:     make(chan struct{}),
		sem:      make(chan struct{}, s.cfg.MaxInflight),
		sessions: make(map[uint64]*entry),
		inflight: make(map[uint64]*inflightReq),
	}
	c.wfd = -1
	if rc, err := nc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { c.wfd = int(fd) })
	}
	return c
}

func (c *conn) serve() {
	c.writerWG.Add(1)
	go c.writer()

	cred := c.cred
	w, err := watchPeer(c.nc, cred.PID, func() { c.fail(ErrPeerExited, "") })
	if err != nil {
		c.fail(fmt.Errorf("watching peer pid %d: %w", cred.PID, err), wire.CodeProtocol)
	} else {
		c.mu.Lock()
		c.watch = w
		c.mu.Unlock()
	}
	c.readAndFinish()
}

// readAndFinish reads until the connection ends and finishes it, unless
// the reading was handed over to another goroutine (serveInline), which
// then does both.
func (c *conn) readAndFinish() {
	if !c.failed() && !c.readLoop() {
		return
	}
	c.finish()
	c.srv.wg.Done()
}

// fail ends the connection once: it queues a fatal error frame (if code is
// set), tells the writer to drain and close, and unblocks the reader. It
// never blocks, so it may be called from a registry callback.
func (c *conn) fail(reason error, code string) {
	c.failOnce.Do(func() {
		c.reason = reason
		grace := drainGrace
		if code != "" {
			// A client dropped for not reading gets the reason before
			// anything still queued, and longer to read it.
			overflow := code == wire.CodeOverflow
			if overflow {
				grace = overflowGrace
			}
			c.forceEnqueue(c.errorFrame(0, wire.FlagFatal, code, reason.Error()), overflow)
		}
		c.grace = grace
		c.dead.Store(true)
		close(c.quit)
		c.cancel()
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
		// A write blocked on a peer that does not read must end too; a
		// peer that reads gets what is queued within this grace time.
		_ = c.nc.SetWriteDeadline(time.Now().Add(grace))
	})
}

// overflowGrace is how long a client dropped for not reading has to read
// the error that says so.
const overflowGrace = 2 * time.Second

// failed reports whether fail ran; after it returns true, c.reason is set.
func (c *conn) failed() bool { return c.dead.Load() }

// finish runs on the connection's goroutine after the reader stopped: every
// session is ended, in-flight requests are waited for, the writer is
// waited for, and the server forgets the connection.
func (c *conn) finish() {
	c.fail(io.EOF, "")
	c.reqWG.Wait()
	c.mu.Lock()
	c.ended = true
	sessions := c.sessions
	c.sessions = nil
	w := c.watch
	c.mu.Unlock()
	for _, e := range sessions {
		c.srv.withdraw(e)
		e.sess.ClientDied()
		c.srv.sessions.Add(-1)
		c.user.handles.Add(-1)
	}
	if w != nil {
		w.Close()
	}
	c.writerWG.Wait()
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	// No request of c is in flight any more (reqWG): a user with no
	// connection left holds no slot.
	if c.user.conns--; c.user.conns <= 0 {
		delete(c.srv.perUID, c.cred.UID)
	}
	if !c.complete {
		c.srv.incomplete--
	}
	c.srv.mu.Unlock()
	if cb := c.srv.cfg.OnDisconnect; cb != nil && c.reason != errHandedOver {
		cb(c.cred, c.reason)
	}
}

func (c *conn) writer() {
	defer c.writerWG.Done()
	defer c.nc.Close()
	defer c.stopWrites()
	var batch, spare []outFrame
	var bufs net.Buffers
	for {
		select {
		case <-c.wake:
		case <-c.quit:
		}
		c.qmu.Lock()
		c.waitDirectLocked()
		quitting := c.failed()
		batch, c.queue = c.queue, spare[:0]
		c.writing = len(batch) > 0
		c.qmu.Unlock()
		if quitting && len(batch) > 0 {
			// The grace counts from now, not from fail: on a loaded
			// machine this goroutine may run after fail's deadline has
			// passed, and Go refuses a write past its deadline even when
			// the socket has room — the client would get EOF instead of
			// the error that says why.
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.grace))
		}
		// Whatever is queued goes out in writevs of up to 64 frames, up
		// to a fatal error frame: nothing may follow it on the wire (an
		// answer queued while fail ran can land behind it).
		for i := 0; i < len(batch); {
			bufs = bufs[:0]
			fatal := false
			for ; i < len(batch) && len(bufs) < 64 && !fatal; i++ {
				b := c.frameBytes(&batch[i])
				fatal = !batch[i].tail && isFatalFrame(b)
				batch[i] = outFrame{}
				bufs = append(bufs, b)
			}
			if !c.write(bufs) || fatal {
				return
			}
		}
		spare = batch[:0]
		c.qmu.Lock()
		c.writing = false
		c.qmu.Unlock()
		if quitting {
			// Drained what was queued when fail ran, within the write
			// deadline it set.
			return
		}
	}
}

// frameBytes is the encoding of a queued frame; a ServiceWasClosed summary
// is encoded now, and later closes queue a new one.
func (c *conn) frameBytes(f *outFrame) []byte {
	e := f.closed
	if e == nil {
		return f.b
	}
	c.qmu.Lock()
	n, last := e.closedCount, e.closedLast
	e.closedQueued, e.closedCount = false, 0
	c.outBytes -= summarySize
	c.qmu.Unlock()
	note := userclient.Notification{Type: userclient.ServiceWasClosed, Service: last}
	if n > 1 {
		note.Detail = fmt.Sprintf("%d clients closed the service", n)
	}
	b := wire.AppendNotification(nil, e.handle, note)
	c.qmu.Lock()
	c.outBytes += len(b)
	c.qmu.Unlock()
	return b
}

// isFatalFrame reports whether b, an encoded frame, is a fatal error frame:
// the last one the connection sends.
func isFatalFrame(b []byte) bool {
	return len(b) > 5 && wire.MsgType(b[4]) == wire.TypeError && b[5]&wire.FlagFatal != 0
}

func (c *conn) write(bufs net.Buffers) bool {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	c.qmu.Lock()
	c.outBytes -= n
	if c.spaceWaiters > 0 {
		close(c.space)
		c.space = make(chan struct{})
	}
	c.qmu.Unlock()
	err := faultinject.At(faultinject.Write, nil)
	if err == nil {
		if len(bufs) == 1 {
			// The usual case in a fan-out: one frame, one write(2).
			_, err = c.nc.Write(bufs[0])
		} else {
			// WriteTo takes a pointer: a field, so that a local does not
			// escape and cost an allocation per write.
			c.wbufs = bufs
			_, err = c.wbufs.WriteTo(c.nc)
			c.wbufs = nil
		}
	}
	if err != nil {
		c.fail(fmt.Errorf("writing: %w", err), "")
		return false
	}
	return true
}

// enqueue queues a frame without ever blocking; a connection whose queue is
// full is not reading and is dropped.
func (c *conn) enqueue(b []byte) {
	c.push(outFrame{b: b}, len(b))
}

// push queues f, counting size bytes for it.
func (c *conn) push(f outFrame, size int) {
	if c.failed() {
		return
	}
	var overflow error
	c.qmu.Lock()
	switch {
	case c.outBytes+size > c.srv.cfg.QueueBytes:
		overflow = fmt.Errorf("%w: more than %d bytes queued", wire.ErrOverflow, c.srv.cfg.QueueBytes)
	case len(c.queue) >= c.srv.cfg.QueueFrames:
		overflow = fmt.Errorf("%w: more than %d frames queued", wire.ErrOverflow, c.srv.cfg.QueueFrames)
	case f.b != nil && !c.writing && len(c.queue) == 0 && c.wfd >= 0:
		// Nobody writes and nothing waits: write it from here.
		c.writing, c.directOn = true, true
		c.qmu.Unlock()
		c.writeDirect(f.b, false)
		return
	default:
		c.queue = append(c.queue, f)
		c.outBytes += size
	}
	c.qmu.Unlock()
	if overflow != nil {
		c.fail(overflow, wire.CodeOverflow)
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeDirect writes b, a whole frame, with one non-blocking write(2) on
// the goroutine that queued it; c.writing is set. What the socket does
// not take now is put first in the queue for the writer, which then
// owns the write side — a copy of it when b is the scratch buffer, which
// the next direct write reuses.
func (c *conn) writeDirect(b []byte, scratch bool) {
	var n int
	err := faultinject.At(faultinject.Write, nil)
	for err == nil {
		if n, err = syscall.Write(c.wfd, b); err != syscall.EINTR {
			break
		}
		err = nil
	}
	c.wroteDirect(b, n, err, scratch)
}

// wroteDirect ends the direct write of b, which wrote n bytes or failed
// with err.
func (c *conn) wroteDirect(b []byte, n int, err error, scratch bool) {
	if err == syscall.EAGAIN {
		err = nil // the socket is full: the writer waits for room
	}
	n = max(n, 0)
	if err != nil {
		c.qmu.Lock()
		c.writing, c.directOn = false, false
		waits := c.writerWaits
		c.writerWaits = false
		c.qmu.Unlock()
		c.fail(fmt.Errorf("writing: %w", err), "")
		if waits {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	c.qmu.Lock()
	if n < len(b) {
		rest := b[n:]
		if scratch {
			rest = slices.Clone(rest)
		}
		c.srv.tails.Add(1)
		c.queue = slices.Insert(c.queue, 0, outFrame{b: rest, tail: n > 0})
		c.outBytes += len(rest)
	}
	c.giveBackWrite()
}

// stopWrites ends the socket's writes before the writer closes it:
// nothing is written after the writer, no direct write either, and none
// is under way at the close — a direct write goes to the descriptor's
// number, which the close frees for reuse. (The writer's loop waits for a
// direct write too, but one may claim the side between the writer's last
// batch and its return.)
func (c *conn) stopWrites() {
	c.qmu.Lock()
	c.waitDirectLocked()
	c.writing = true
	c.qmu.Unlock()
}

// waitDirectLocked returns, qmu held, once no direct write holds the
// write side: the writer's wait (a direct write wakes it when it ends).
func (c *conn) waitDirectLocked() {
	for c.directOn {
		c.writerWaits = true
		c.qmu.Unlock()
		<-c.wake
		c.qmu.Lock()
	}
}

// streamQueueShare is the part of the connection's queue bounds a streamed
// reply may fill: the rest stays free for notifications and other
// answers, which never wait.
const streamQueueShare = 2

// enqueueWait queues a frame of a streamed reply, waiting while the queue
// holds more than its share: a slow reader slows the producer down instead
// of being dropped for overflow. It gives up when ctx ends (the request was
// cancelled) or the connection ends.
func (c *conn) enqueueWait(ctx context.Context, b []byte) error {
	maxBytes := c.srv.cfg.QueueBytes / streamQueueShare
	maxFrames := max(c.srv.cfg.QueueFrames/streamQueueShare, 1)
	for {
		// Looked at first, not only while waiting: a reader that keeps up
		// would otherwise let a cancelled stream run to its end
		// (TestStreamedReplyCancel, under load).
		if err := ctx.Err(); err != nil {
			return err
		}
		c.qmu.Lock()
		q := c.outBytes
		if (q == 0 || q+len(b) <= maxBytes) && len(c.queue) < maxFrames {
			c.qmu.Unlock()
			c.enqueue(b)
			return nil
		}
		space := c.space
		c.spaceWaiters++
		c.qmu.Unlock()
		var err error
		select {
		case <-space:
		case <-ctx.Done():
			err = ctx.Err()
		case <-c.quit:
			err = wire.ErrClosed
		}
		c.qmu.Lock()
		c.spaceWaiters--
		c.qmu.Unlock()
		if err != nil {
			return err
		}
	}
}

// partSize is the largest frame a streamed reply is cut into: the peer's
// maximum frame, and small enough for the queue share it may fill.
func (c *conn) partSize() int {
	return max(min(c.srv.cfg.MaxFrame, c.srv.cfg.QueueBytes/streamQueueShare), wire.HeaderLen+1)
}

// streamParts sends the head of a reply too large for one frame as part
// frames (version 3), leaving in f what fits the final reply frame. The
// reply's bytes are cut at arbitrary points: control first, then data.
func (c *conn) streamParts(ctx context.Context, f *wire.Frame) error {
	size := c.partSize()
	if c.version < 3 || f.Size() <= c.srv.cfg.MaxFrame {
		return nil
	}
	for f.Size() > size {
		p := wire.Frame{Type: wire.TypePart, ID: f.ID}
		room := size - wire.HeaderLen
		if k := min(room, len(f.Control)); k > 0 {
			p.Control, f.Control = f.Control[:k], f.Control[k:]
			room -= k
		}
		if k := min(room, len(f.Data)); k > 0 {
			p.Data, f.Data = f.Data[:k], f.Data[k:]
		}
		if err := c.enqueueWait(ctx, c.encode(&p)); err != nil {
			return err
		}
	}
	return nil
}

// writeStreamed runs sr's WriteJSON. On a version 3 connection what it
// writes goes out in part frames as soon as a frame's worth is there; the
// rest, less than a frame, is returned for the final reply. Older peers
// get it all back, for one frame.
func (c *conn) writeStreamed(ctx context.Context, id uint64, sr StreamedResult) ([]byte, error) {
	if c.version < 3 {
		var b bytes.Buffer
		err := sr.WriteJSON(&b)
		return b.Bytes(), err
	}
	pw := &partWriter{c: c, ctx: ctx, id: id, room: c.partSize() - wire.HeaderLen}
	if err := sr.WriteJSON(pw); err != nil {
		return nil, err
	}
	return pw.buf, pw.err
}

// partWriter cuts what is written into part frames of the reply to id.
type partWriter struct {
	c    *conn
	ctx  context.Context
	id   uint64
	room int // control bytes per part frame
	buf  []byte
	err  error
}

func (w *partWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.buf = append(w.buf, p...)
	for len(w.buf) > w.room {
		part := wire.Frame{Type: wire.TypePart, ID: w.id, Control: w.buf[:w.room]}
		if w.err = w.c.enqueueWait(w.ctx, w.c.encode(&part)); w.err != nil {
			return 0, w.err
		}
		w.buf = w.buf[:copy(w.buf, w.buf[w.room:])]
	}
	return len(p), nil
}

// queueClosed queues a ServiceWasClosed for e, or merges it into the one
// already queued: a burst of closes by another client costs this
// connection one frame, so it is never dropped for someone else's burst.
func (c *conn) queueClosed(e *entry, closer uint64) {
	c.qmu.Lock()
	if e.closedQueued {
		e.closedCount++
		e.closedLast = closer
		c.qmu.Unlock()
		c.srv.coalesce.Add(1)
		return
	}
	e.closedQueued, e.closedCount, e.closedLast = true, 1, closer
	c.qmu.Unlock()
	c.push(outFrame{closed: e}, summarySize)
}

// forceEnqueue queues the fatal error frame past the limits; with first
// set, it replaces whatever is queued, so that the peer reads it next.
func (c *conn) forceEnqueue(b []byte, first bool) {
	c.qmu.Lock()
	if first {
		// The rest of a frame a direct write began stays first: the
		// stream must stay framed.
		keep := 0
		if len(c.queue) > 0 && c.queue[0].tail {
			keep = 1
		}
		for i := keep; i < len(c.queue); i++ {
			c.queue[i] = outFrame{}
		}
		c.queue = c.queue[:keep]
		c.outBytes = 0
		if keep == 1 {
			c.outBytes = len(c.queue[0].b)
		}
	}
	c.queue = append(c.queue, outFrame{b: b})
	c.outBytes += len(b)
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) encode(f *wire.Frame) []byte {
	b, err := wire.AppendFrame(make([]byte, 0, f.Size()+4), f, c.srv.cfg.MaxFrame)
	if err != nil {
		// Only a reply too large for the peer gets here: say so instead.
		return c.errorFrame(f.ID, 0, wire.CodeFailed, err.Error())
	}
	return b
}

func (c *conn) errorFrame(id uint64, flags uint8, code, msg string) []byte {
	ctl, _ := json.Marshal(wire.ErrorMsg{Code: code, Message: msg})
	f := wire.Frame{Type: wire.TypeError, Flags: flags, ID: id, Control: ctl}
	b, _ := wire.AppendFrame(nil, &f, max(c.srv.cfg.MaxFrame, f.Size()))
	return b
}

func (c *conn) sendError(id uint64, err error) {
	c.enqueue(c.errorFrame(id, 0, wire.CodeOf(err), err.Error()))
}

func (c *conn) sendReply(id uint64, v any, data []byte) {
	f := wire.Frame{Type: wire.TypeReply, ID: id, Data: data}
	if v != nil {
		ctl, err := json.Marshal(v)
		if err != nil {
			c.sendError(id, err)
			return
		}
		f.Control = ctl
	}
	c.enqueue(c.encode(&f))
}

// readLoop reads and dispatches frames until the connection ends (it then
// returns true) or the reading is handed over to another goroutine (false).
func (c *conn) readLoop() bool {
	rs := &c.rs
	if !rs.handshaken {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.cfg.HandshakeTimeout))
	}
	lim := &c.srv.cfg.Limits
	for {
		inFrame := false
		if rs.handshaken {
			// Between frames the read deadline is the idle timeout,
			// re-armed only when half of it has passed (setting a
			// deadline is not free); when it expires with the connection
			// busy, it is simply re-armed.
			now := time.Now()
			if lim.IdleTimeout > 0 && !c.embedded && (rs.idleUntil.IsZero() || rs.idleUntil.Sub(now) < lim.IdleTimeout/2) {
				rs.idleUntil = now.Add(lim.IdleTimeout)
				_ = c.nc.SetReadDeadline(rs.idleUntil)
			}
			complete, err := c.dec.Wait()
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !c.failed() {
				if c.idle() {
					c.srv.timeouts.Add(1)
					c.fail(fmt.Errorf("%w: %w", wire.ErrLimit, ErrIdleTimeout), wire.CodeLimit)
					return true
				}
				rs.idleUntil = time.Time{}
				continue
			}
			if err == nil && !complete && lim.FrameTimeout > 0 {
				// The rest of the frame has a deadline: a peer that
				// sends a header and stalls holds nothing for long.
				_ = c.nc.SetReadDeadline(time.Now().Add(lim.FrameTimeout))
				rs.idleUntil, inFrame = time.Time{}, true
			}
		}
		f, err := c.dec.ReadFrame()
		if err == nil {
			err = faultinject.At(faultinject.Read, nil)
		}
		if err != nil {
			switch {
			case c.failed():
				// fail already ran (peer exited, overflow, shutdown).
			case errors.Is(err, os.ErrDeadlineExceeded) && !rs.handshaken:
				c.fail(ErrHandshakeTimeout, wire.CodeProtocol)
			case errors.Is(err, os.ErrDeadlineExceeded) && inFrame:
				c.srv.timeouts.Add(1)
				c.fail(fmt.Errorf("%w: %w (%v)", wire.ErrLimit, ErrFrameTimeout, lim.FrameTimeout), wire.CodeLimit)
			case errors.Is(err, wire.ErrProtocol):
				c.fail(err, wire.CodeProtocol)
			default:
				c.fail(err, "")
			}
			return true
		}
		if !rs.handshaken {
			if err := c.handshake(&f); err != nil {
				if err == errHandedOver {
					c.fail(err, "") // the welcome goes out, then our copy closes
					return true
				}
				c.fail(err, wire.CodeOf(err))
				return true
			}
			rs.handshaken = true
			c.complete = true
			c.srv.mu.Lock()
			c.srv.incomplete--
			c.srv.mu.Unlock()
			_ = c.nc.SetReadDeadline(time.Time{})
			continue
		}
		switch f.Type {
		case wire.TypeOpen, wire.TypeClose, wire.TypeCall, wire.TypeAdmin, wire.TypePing:
		case wire.TypeCancel:
			// Served here, not on a request goroutine: a cancel takes no
			// sem slot, so it is read even while every slot is busy with
			// the calls it may be about to cancel.
			if c.version < 2 {
				c.fail(wire.Errorf(nil, "cancel frames need protocol version 2, this connection speaks %d", c.version), wire.CodeProtocol)
				return true
			}
			c.cancelRequest(f.ID)
			continue
		default:
			c.fail(wire.Errorf(nil, "a client may not send %v frames", f.Type), wire.CodeProtocol)
			return true
		}
		req, err := parseRequest(&f, rs.lastMethod)
		if err != nil {
			c.fail(err, wire.CodeProtocol)
			return true
		}
		if req.hm.Method != "" {
			rs.lastMethod = req.hm.Method
		}
		select {
		case c.sem <- struct{}{}:
		case <-c.quit:
			return true
		}
		// A call also takes a slot of the user's share: calls are what
		// block in drivers (an SG_IO holds an OS thread). While the share
		// is used up, this connection is not read (as for its own
		// MaxInflight); other users are not affected. Waiting opens are
		// bounded by their own limits and hold no thread.
		userSlot := req.f.Type == wire.TypeCall
		if userSlot {
			select {
			case c.user.inflight <- struct{}{}:
			case <-c.quit:
				<-c.sem
				return true
			}
			// Then one of the server's: the bound on threads held
			// however many users there are.
			select {
			case c.srv.inflight <- struct{}{}:
			case <-c.quit:
				<-c.user.inflight
				<-c.sem
				return true
			}
		}
		req.userSlot = userSlot
		// Registered before the next frame is read, so that a cancel
		// right behind its request finds it.
		ir, err := c.register(&req.f)
		if err != nil {
			c.release(req)
			c.fail(err, wire.CodeProtocol)
			return true
		}
		req.ir = ir
		c.reqWG.Add(1)
		if req.f.Type == wire.TypeCall {
			if !c.serveInline(req) {
				return false
			}
			continue
		}
		go c.serveRequest(req)
	}
}

// serveRequest serves a request the reader admitted, and gives back its
// slots.
func (c *conn) serveRequest(r *request) {
	defer func() { c.settle(r.f.ID, r.ir); c.release(r); c.reqWG.Done() }()
	c.handle(r, r.ir)
}

// release gives back the slots a request took.
func (c *conn) release(r *request) {
	if r.userSlot {
		<-c.srv.inflight
		<-c.user.inflight
	}
	<-c.sem
}

// idle reports whether the connection holds nothing: no handle, no open
// in progress and no request in flight.
func (c *conn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions) == 0 && c.opening == 0 && len(c.sem) == 0
}

// register makes a call or admin request on a version 2 connection
// cancellable. Request ids must be unique among outstanding requests
// (PROTOCOL.md); a duplicate among cancellable ones would make a cancel
// ambiguous, so it is a protocol error.
func (c *conn) register(f *wire.Frame) (*inflightReq, error) {
	if c.version < 2 || (f.Type != wire.TypeCall && f.Type != wire.TypeAdmin && f.Type != wire.TypeOpen) {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.inflight[f.ID]; dup {
		return nil, wire.Errorf(nil, "%v request id %d is already in flight", f.Type, f.ID)
	}
	ir := &inflightReq{}
	ir.ctx.Init(c.ctx)
	c.inflight[f.ID] = ir
	return ir, nil
}

// cancelRequest serves a cancel frame. An id that is not a call or admin
// request in flight — it finished and its answer crossed the cancel, or
// it never existed — is ignored: that race is normal.
func (c *conn) cancelRequest(id uint64) {
	c.mu.Lock()
	ir := c.inflight[id]
	c.mu.Unlock()
	if ir != nil {
		ir.cancelled.Store(true)
		ir.ctx.End()
	}
}

// settle forgets request id (before its answer is queued: once the client
// has the answer it may reuse the id) and reports whether a cancel frame
// named it. It is idempotent.
func (c *conn) settle(id uint64, ir *inflightReq) (cancelled bool) {
	if ir == nil {
		return false
	}
	c.mu.Lock()
	if c.inflight[id] == ir {
		delete(c.inflight, id)
	}
	c.mu.Unlock()
	ir.ctx.End()
	return ir.cancelled.Load()
}

// inflightLen is the number of cancellable requests in flight (tests).
func (c *conn) inflightLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inflight)
}

// clone copies b out of the decoder's buffer (nil if empty).
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func (c *conn) handshake(f *wire.Frame) error {
	if err := faultinject.At(faultinject.Handshake, nil); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if f.Type != wire.TypeHello {
		return wire.Errorf(nil, "first frame is %v, want hello", f.Type)
	}
	var h wire.HelloMsg
	if err := json.Unmarshal(f.Control, &h); err != nil {
		return wire.Errorf(err, "bad hello payload")
	}
	if h.Protocol != wire.ProtocolName {
		return wire.Errorf(nil, "hello names protocol %q, want %q", h.Protocol, wire.ProtocolName)
	}
	// The newest version both speak.
	for _, v := range h.Versions {
		if v >= wire.MinVersion && v <= wire.Version && v > c.version {
			c.version = v
		}
	}
	if c.version == 0 {
		return &wire.RemoteError{Code: wire.CodeVersion, Message: fmt.Sprintf("client speaks versions %v, server speaks %d to %d", h.Versions, wire.MinVersion, wire.Version)}
	}
	w := wire.WelcomeMsg{Protocol: wire.ProtocolName, Version: c.version, MaxFrame: c.srv.cfg.MaxFrame,
		PID: c.cred.PID, UID: c.cred.UID, GID: c.cred.GID}
	if c.version >= 2 {
		w.MaxInflight = c.srv.cfg.MaxInflight
	}
	if h.Direct != "" {
		if err := c.handOver(h.Direct); err != nil {
			return err
		}
		w.Direct = true
		ctl, _ := json.Marshal(w)
		c.enqueue(c.encode(&wire.Frame{Type: wire.TypeWelcome, ID: f.ID, Control: ctl}))
		return errHandedOver
	}
	ctl, _ := json.Marshal(w)
	c.enqueue(c.encode(&wire.Frame{Type: wire.TypeWelcome, ID: f.ID, Control: ctl}))
	return nil
}

// request is one request frame with its control payload decoded.
type request struct {
	f        wire.Frame
	userSlot bool         // it holds a slot of its user's share and of the server's
	ir       *inflightReq // its cancel entry (nil: not cancellable)
	open     wire.OpenMsg
	hm       wire.HandleMsg // close, call
	admin    wire.AdminMsg
}

// parseRequest decodes a request's control payload. It runs on the reading
// goroutine, before the request is dispatched, so that a malformed frame
// ends the connection before any frame behind it is served. lastMethod is
// given back for a call of the same method, instead of a new string.
func parseRequest(f *wire.Frame, lastMethod string) (*request, error) {
	// The decoder reuses its buffer: the request gets its own copy of the
	// data. The control payload is decoded here, into copies, and not
	// needed after.
	r := &request{f: wire.Frame{Type: f.Type, ID: f.ID, Data: clone(f.Data)}}
	var err error
	switch f.Type {
	case wire.TypeOpen:
		if err = json.Unmarshal(f.Control, &r.open); err != nil {
			return nil, wire.Errorf(err, "bad open payload")
		}
	case wire.TypeClose:
		if r.hm, err = wire.DecodeHandleMsg(f.Control, ""); err != nil {
			return nil, wire.Errorf(err, "bad close payload")
		}
	case wire.TypeCall:
		if r.hm, err = wire.DecodeHandleMsg(f.Control, lastMethod); err != nil {
			return nil, wire.Errorf(err, "bad call payload")
		}
	case wire.TypeAdmin:
		if err = json.Unmarshal(f.Control, &r.admin); err != nil {
			return nil, wire.Errorf(err, "bad admin payload")
		}
	}
	return r, nil
}

// handle serves one request; everything is answered with a reply or an
// error frame and the connection stays usable (parseRequest has refused
// what would end it). ir is the request's cancel entry (nil: not
// cancellable).
func (c *conn) handle(r *request, ir *inflightReq) {
	ctx := c.ctx
	if ir != nil {
		ctx = &ir.ctx
	}
	f := &r.f
	switch f.Type {
	case wire.TypePing:
		c.sendReply(f.ID, nil, f.Data)
	case wire.TypeOpen:
		c.open(ctx, f.ID, ir, r.open)
	case wire.TypeClose:
		c.close(f.ID, r.hm.Handle)
	case wire.TypeCall:
		c.call(ctx, f.ID, ir, r.hm.Handle, r.hm.Method, f.Data)
	case wire.TypeAdmin:
		c.admin(ctx, f.ID, ir, r.admin, f.Data)
	}
}

func (c *conn) open(ctx context.Context, id uint64, ir *inflightReq, m wire.OpenMsg) {
	// The handle is reserved before the open: concurrent opens on one
	// connection cannot overshoot the limit together.
	c.mu.Lock()
	if n := len(c.sessions) + c.opening; n >= c.srv.cfg.Limits.MaxHandles {
		c.mu.Unlock()
		c.settle(id, ir)
		c.sendError(id, fmt.Errorf("%w: this connection has %d handles open or opening, the most allowed", wire.ErrLimit, n))
		return
	}
	c.opening++
	c.mu.Unlock()
	if n := c.user.handles.Add(1); n > int64(c.srv.cfg.Limits.MaxHandlesPerUID) {
		c.user.handles.Add(-1)
		c.mu.Lock()
		c.opening--
		c.mu.Unlock()
		c.settle(id, ir)
		c.sendError(id, fmt.Errorf("%w: uid %d has %d handles open or opening over its connections, the most allowed", wire.ErrLimit, c.cred.UID, n-1))
		return
	}
	e, info, err := c.openWaiting(ctx, m)
	c.mu.Lock()
	c.opening--
	c.mu.Unlock()
	if err != nil {
		c.user.handles.Add(-1)
	}
	if c.settle(id, ir) && err != nil {
		c.sendCancelled(id, "open", err)
		return
	}
	if err != nil {
		c.sendError(id, err)
		return
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		e.sess.ClientDied()
		c.srv.sessions.Add(-1)
		c.user.handles.Add(-1)
		return
	}
	c.next++
	e.handle = c.next
	c.sessions[e.handle] = e
	c.mu.Unlock()
	c.sendReply(id, wire.OpenReply{Handle: e.handle, Service: info, Client: e.sess.ClientID(), Direct: c.offerDirect(e)}, nil)
	e.markReady()
}

// openWaiting opens the first service m matches; with m.Wait (version 2)
// it waits, until ctx ends, for one to be published or finish starting.
func (c *conn) openWaiting(ctx context.Context, m wire.OpenMsg) (*entry, userclient.ServiceInfo, error) {
	w, canWait := c.srv.backend.(Watcher)
	if !m.Wait || c.version < 2 || !canWait || m.Match.IsZero() {
		e, info, err := c.srv.openSession(ctx, c, m.Match)
		if err != nil && m.Wait && c.version >= 2 && errors.Is(err, wire.ErrNoService) {
			err = fmt.Errorf("%w (this server cannot wait for a service to appear)", err)
		}
		return e, info, err
	}
	if err := c.reserveWait(); err != nil {
		return nil, userclient.ServiceInfo{}, err
	}
	defer c.releaseWait()
	for {
		// Watch before looking: a service that arrives between the two
		// closes changed, so it is not missed.
		changed, stop := w.Watch()
		e, info, err := c.srv.openSession(ctx, c, m.Match)
		if err == nil || !errors.Is(err, wire.ErrNoService) || errors.Is(err, wire.ErrPermission) {
			stop()
			return e, info, err
		}
		select {
		case <-changed:
			stop()
		case <-ctx.Done():
			stop()
			return nil, userclient.ServiceInfo{}, fmt.Errorf("%w: gave up waiting: %w", wire.ErrNoService, ctx.Err())
		}
	}
}

// reserveWait counts a waiting open against the connection's and the
// server's limits.
func (c *conn) reserveWait() error {
	lim := &c.srv.cfg.Limits
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting >= lim.MaxWaitingOpens {
		return fmt.Errorf("%w: this connection has %d opens waiting, the most allowed", wire.ErrLimit, c.waiting)
	}
	if c.srv.waiting.Add(1) > int64(lim.MaxWaitingOpensTotal) {
		c.srv.waiting.Add(-1)
		return fmt.Errorf("%w: the server has %d opens waiting, the most allowed", wire.ErrLimit, lim.MaxWaitingOpensTotal)
	}
	c.waiting++
	return nil
}

func (c *conn) releaseWait() {
	c.mu.Lock()
	c.waiting--
	c.mu.Unlock()
	c.srv.waiting.Add(-1)
}

// notify is the session's Notify: what comes before the open reply is
// held until it is queued.
func (e *entry) notify(n userclient.Notification) { e.notifyIn(n, nil) }

// notifyIn is notify within a fan-out's batch b (nil: none).
func (e *entry) notifyIn(n userclient.Notification, b *driver.Batch) {
	if !e.hold(n) {
		e.send(n, b)
	}
}

func (e *entry) send(n userclient.Notification, b *driver.Batch) {
	if n.Type == userclient.ServiceWasClosed && n.Detail == "" && len(n.Data) == 0 {
		e.c.queueClosed(e, n.Service)
		return
	}
	e.c.sendNotification(e.handle, n, b)
}

// sendNotification queues a notification frame; one that cannot fit the
// peer's maximum frame is dropped with a log line (a driver bug).
//
// A small one, when nobody writes and nothing is queued, is encoded into
// the connection's scratch buffer and written at once (see push), or, in
// a fan-out's batch b, when the batch is flushed: a fan-out then
// allocates nothing per client, unless a socket is full.
func (c *conn) sendNotification(h uint64, n userclient.Notification, b *driver.Batch) {
	if len(n.Type)+len(n.Cause)+len(n.RootCause)+len(n.Detail)+len(n.Data) <= scratchMax && c.claimDirect() {
		c.scratch = wire.AppendNotification(c.scratch[:0], h, n)
		if len(c.scratch)-4 > c.srv.cfg.MaxFrame {
			c.endDirect()
			c.cfg().Log.Warn("notification too large for the peer, dropped", "type", n.Type, "bytes", len(c.scratch)-4)
			return
		}
		if b != nil {
			sb := c.srv.sendBatch(b)
			sb.conns = append(sb.conns, c)
			return
		}
		c.writeDirect(c.scratch, true)
		return
	}
	f := wire.AppendNotification(nil, h, n)
	if len(f)-4 > c.srv.cfg.MaxFrame {
		c.cfg().Log.Warn("notification too large for the peer, dropped", "type", n.Type, "bytes", len(f)-4)
		return
	}
	c.enqueue(f)
}

// scratchMax bounds the variable part of a notification encoded into the
// connection's scratch buffer, and so the buffer (kept per connection).
const scratchMax = 1 << 10

// claimDirect takes the socket's write side for a direct write if nobody
// writes and nothing is queued; the caller then calls writeDirect or
// endDirect.
func (c *conn) claimDirect() bool {
	if c.wfd < 0 || c.failed() {
		return false
	}
	c.qmu.Lock()
	ok := !c.writing && len(c.queue) == 0
	if ok {
		c.writing, c.directOn = true, true
	}
	c.qmu.Unlock()
	return ok
}

// endDirect gives back the write side claimed for a direct write that
// wrote nothing, waking the writer if it waits for it or has work.
func (c *conn) endDirect() {
	c.qmu.Lock()
	c.giveBackWrite()
}

// giveBackWrite ends a direct write's hold on the write side; qmu is
// held, and unlocked. The writer is woken if it waits for the write side
// or has work.
func (c *conn) giveBackWrite() {
	c.writing, c.directOn = false, false
	wake := len(c.queue) > 0 || c.writerWaits
	c.writerWaits = false
	c.qmu.Unlock()
	if wake {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

func (c *conn) cfg() *Config { return &c.srv.cfg }

// hold keeps n until the open reply is queued, so that the application
// never sees a notification for a handle it does not know yet.
func (e *entry) hold(n userclient.Notification) bool {
	if e.readyFast.Load() {
		return false // markReady's replay is over: nothing to overtake
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ready {
		return false
	}
	e.pending = append(e.pending, n)
	return true
}

func (e *entry) markReady() {
	// The pending list is replayed under the lock so that a notification
	// arriving meanwhile cannot overtake it.
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.pending {
		e.send(n, nil)
	}
	e.pending = nil
	e.ready = true
	e.readyFast.Store(true)
}

func (c *conn) take(h uint64) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.sessions[h]
	delete(c.sessions, h)
	return e
}

func (c *conn) lookup(h uint64) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessions[h]
}

func (c *conn) close(id, h uint64) {
	e := c.take(h)
	if e == nil {
		c.sendError(id, fmt.Errorf("%w: no open handle %d", wire.ErrClosed, h))
		return
	}
	c.srv.withdraw(e)
	err := e.sess.Close()
	c.srv.sessions.Add(-1)
	c.user.handles.Add(-1)
	if err != nil && !errors.Is(err, wire.ErrTerminated) {
		c.sendError(id, err)
		return
	}
	c.sendReply(id, nil, nil)
}

func (c *conn) call(ctx context.Context, id uint64, ir *inflightReq, h uint64, method string, in []byte) {
	e := c.lookup(h)
	if e == nil {
		c.settle(id, ir)
		c.sendError(id, fmt.Errorf("%w: no open handle %d", wire.ErrClosed, h))
		return
	}
	out, err := e.sess.Call(ctx, method, in)
	c.answer(ctx, id, ir, "call", method, nil, out, err)
}

// answer sends the outcome of a cancellable request: its reply — streamed
// in part frames first on a version 3 connection when it does not fit one
// frame, while the request can still be cancelled — or its error.
//
// op and what name the request in the error a cancelled request gets
// (call "read"); the text is made only then.
func (c *conn) answer(ctx context.Context, id uint64, ir *inflightReq, op, what string, v any, data []byte, err error) {
	f := wire.Frame{Type: wire.TypeReply, ID: id, Data: data}
	if sr, ok := v.(StreamedResult); ok && err == nil {
		f.Control, err = c.writeStreamed(ctx, id, sr)
	} else if err == nil && v != nil {
		f.Control, err = json.Marshal(v)
	}
	if err == nil {
		err = c.streamParts(ctx, &f)
	}
	if c.settle(id, ir) && err != nil {
		c.sendCancelled(id, fmt.Sprintf("%s %q", op, what), err)
		return
	}
	if err != nil {
		c.sendError(id, err)
		return
	}
	c.enqueue(c.encode(&f))
}

func (c *conn) admin(ctx context.Context, id uint64, ir *inflightReq, m wire.AdminMsg, data []byte) {
	res, out, err := c.srv.admin(ctx, c.cred, m.Op, m.Args, data)
	c.answer(ctx, id, ir, "admin", m.Op, res, out, err)
}

// sendCancelled answers a request the client cancelled that failed after
// the cancel: whatever the method made of its cancelled context, the
// client asked for it. One that succeeded anyway gets its normal reply.
func (c *conn) sendCancelled(id uint64, op string, err error) {
	c.enqueue(c.errorFrame(id, 0, wire.CodeCancelled, fmt.Sprintf("%s cancelled by the client: %v", op, err)))
}

// audit logs one decision: what was asked (op, what), by whom, and the
// outcome.
func (s *Server) audit(cred userclient.Cred, op, what string, err error, attrs ...slog.Attr) {
	a := append([]slog.Attr{slog.String("op", op), slog.String("asked", what),
		slog.Int("pid", int(cred.PID)), slog.Uint64("uid", uint64(cred.UID)), slog.Uint64("gid", uint64(cred.GID))}, attrs...)
	if err != nil {
		s.cfg.Audit.LogAttrs(context.Background(), slog.LevelWarn, "audit: refused", append(a, slog.String("why", err.Error()))...)
		return
	}
	s.cfg.Audit.LogAttrs(context.Background(), slog.LevelInfo, "audit: granted", a...)
}

func (s *Server) admin(ctx context.Context, cred userclient.Cred, op string, args json.RawMessage, data []byte) (any, []byte, error) {
	err := s.cfg.Policy.AllowAdmin(cred, op)
	s.audit(cred, "admin", op, err)
	if err != nil {
		return nil, nil, err
	}
	if s.cfg.Admin == nil {
		return nil, nil, fmt.Errorf("%w: administrative call %q: this server has no admin handler", wire.ErrNoMethod, op)
	}
	return s.cfg.Admin(ctx, cred, op, args, data)
}

// openSession finds the first service matching m that the policy lets
// c's peer open, and opens it; the session's notifications go to c.
func (s *Server) openSession(ctx context.Context, c *conn, m userclient.Match) (*entry, userclient.ServiceInfo, error) {
	cred := c.cred
	if m.IsZero() {
		return nil, userclient.ServiceInfo{}, fmt.Errorf("%w: empty match", wire.ErrNoService)
	}
	p := &s.cfg.Policy
	// Refused before looking: the answer must not depend on what exists.
	if slices.Contains(p.ReadClasses, m.Class) {
		if !p.MayRead(cred) {
			// The read views are no secret: say why.
			err := p.AllowOpen(cred, userclient.ServiceInfo{Class: m.Class})
			s.audit(cred, "open", m.String(), err)
			return nil, userclient.ServiceInfo{}, err
		}
	} else if !p.mayOpenAny(cred) {
		err := p.refuseOpenAll(cred)
		s.audit(cred, "open", m.String(), err)
		return nil, userclient.ServiceInfo{}, err
	}
	cands, err := s.backend.Lookup(m)
	if err != nil {
		return nil, userclient.ServiceInfo{}, err
	}
	var denied error
	for _, info := range cands {
		if err := p.AllowOpen(cred, info); err != nil {
			denied = err
			continue
		}
		e := &entry{c: c}
		sess, err := s.backend.Open(ctx, info.ID, OpenRequest{Cred: cred, Notify: e.notify, to: e})
		if errors.Is(err, wire.ErrNoService) {
			continue // it went away since Lookup: try the next
		}
		if err != nil {
			s.audit(cred, "open", m.String(), nil, slog.String("service", info.String()), slog.String("failed", err.Error()))
			return nil, userclient.ServiceInfo{}, err
		}
		e.sess = sess
		s.sessions.Add(1)
		info = sess.Info()
		s.audit(cred, "open", m.String(), nil, slog.String("service", info.String()))
		return e, info, nil
	}
	if denied != nil {
		// Logged with the reason; the client hears what it would if
		// nothing matched, so that refusals are no oracle for which
		// services and properties exist.
		s.audit(cred, "open", m.String(), denied)
	}
	// The client says what it looked for: the bare sentinel does not
	// repeat it.
	return nil, userclient.ServiceInfo{}, wire.ErrNoService
}
