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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/internal/faultinject"

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
	// Admin serves administrative calls; nil answers them with userclient.ErrNoMethod.
	Admin AdminFunc
	// OnDisconnect, if set, is told why each connection ended (after its
	// sessions got ClientDied or Close).
	OnDisconnect func(cred userclient.Cred, reason error)
	// Log receives connection-level errors; nil discards them.
	Log *slog.Logger
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
}

// drainGrace is how long a failing connection's queued frames may take to
// be written.
const drainGrace = 100 * time.Millisecond

// Server serves applications on a Unix socket.
type Server struct {
	backend Backend
	cfg     Config
	ln      *net.UnixListener

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup

	sessions atomic.Int64
}

// Stats is a snapshot of a server's load.
type Stats struct {
	Conns    int // connections being served
	Sessions int // open handles over all connections
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
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Err != nil {
			err = ne.Err // without net's "listen unix <path>"
		}
		return nil, opErr(err)
	}
	if err := os.Chmod(cfg.Path, cfg.Mode); err != nil {
		ln.Close()
		return nil, opErr(err)
	}
	if cfg.GID >= 0 {
		if err := os.Lchown(cfg.Path, -1, cfg.GID); err != nil {
			ln.Close()
			return nil, opErr(err)
		}
	}
	s := &Server{backend: b, cfg: cfg, ln: ln, conns: make(map[*conn]struct{})}
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
	return Stats{Conns: n, Sessions: int(s.sessions.Load())}
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
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// conn is one application connection.
type conn struct {
	srv  *Server
	nc   *net.UnixConn
	cred userclient.Cred
	dec  *wire.Decoder

	ctx    context.Context // cancelled when the connection ends: in-flight calls stop
	cancel context.CancelFunc

	out      chan []byte // encoded frames for the writer
	wbufs    net.Buffers // the batch being written (the writer's only)
	outBytes atomic.Int64
	// A streamed reply (version 3) waits for room in the queue instead of
	// overflowing it: the writer closes space, under spaceMu, each time it
	// takes frames out while someone waits.
	spaceMu      sync.Mutex
	space        chan struct{}
	spaceWaiters atomic.Int32
	quit         chan struct{} // closed by fail: the writer drains and closes
	writerWG     sync.WaitGroup
	reqWG        sync.WaitGroup
	sem          chan struct{}

	failOnce sync.Once
	reason   error

	version int // negotiated in the handshake; read only by the reader after it

	mu       sync.Mutex
	sessions map[uint64]*entry
	next     uint64
	ended    bool
	watch    io.Closer // the pidfd watch, closed at the end
	// inflight holds the call and admin requests being served on a
	// version 2 connection, by request id, so that a cancel frame can
	// cancel their context. An entry is added by the reader while the
	// request holds a sem slot and removed before the slot is given back:
	// it never holds more than MaxInflight entries.
	inflight map[uint64]*inflightReq
}

// inflightReq is a cancellable request in flight.
type inflightReq struct {
	ctx       context.Context // the connection's context, also cancelled by a cancel frame
	cancel    context.CancelFunc
	cancelled atomic.Bool // a cancel frame named it
}

// entry is one open handle.
type entry struct {
	handle  uint64
	sess    Session
	mu      sync.Mutex
	send    func(userclient.Notification)
	ready   bool                      // the open reply is queued: notifications may follow it
	pending []userclient.Notification // notifications that came before the open reply
}

func newConn(s *Server, nc *net.UnixConn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{
		srv: s, nc: nc, ctx: ctx, cancel: cancel,
		dec:      wire.NewDecoder(nc, s.cfg.MaxFrame),
		out:      make(chan []byte, s.cfg.QueueFrames),
		space:    make(chan struct{}),
		quit:     make(chan struct{}),
		sem:      make(chan struct{}, s.cfg.MaxInflight),
		sessions: make(map[uint64]*entry),
		inflight: make(map[uint64]*inflightReq),
	}
}

func (c *conn) serve() {
	defer c.srv.wg.Done()
	c.writerWG.Add(1)
	go c.writer()

	cred, err := peerCred(c.nc)
	if err != nil {
		c.fail(fmt.Errorf("reading peer credentials: %w", err), wire.CodeProtocol)
	} else {
		c.cred = cred
		w, err := watchPeer(c.nc, cred.PID, func() { c.fail(ErrPeerExited, "") })
		if err != nil {
			c.fail(fmt.Errorf("watching peer pid %d: %w", cred.PID, err), wire.CodeProtocol)
		} else {
			c.mu.Lock()
			c.watch = w
			c.mu.Unlock()
		}
	}
	if !c.failed() {
		c.readLoop()
	}
	c.finish()
}

// fail ends the connection once: it queues a fatal error frame (if code is
// set), tells the writer to drain and close, and unblocks the reader. It
// never blocks, so it may be called from a registry callback.
func (c *conn) fail(reason error, code string) {
	c.failOnce.Do(func() {
		c.reason = reason
		if code != "" {
			c.forceEnqueue(c.errorFrame(0, wire.FlagFatal, code, reason.Error()))
		}
		close(c.quit)
		c.cancel()
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
		// A write blocked on a peer that does not read must end too; a
		// peer that reads gets what is queued within this grace time.
		_ = c.nc.SetWriteDeadline(time.Now().Add(drainGrace))
	})
}

// failed reports whether fail ran; after it returns true, c.reason is set.
func (c *conn) failed() bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

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
		e.sess.ClientDied()
		c.srv.sessions.Add(-1)
	}
	if w != nil {
		w.Close()
	}
	c.writerWG.Wait()
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.srv.mu.Unlock()
	if cb := c.srv.cfg.OnDisconnect; cb != nil {
		cb(c.cred, c.reason)
	}
}

func (c *conn) writer() {
	defer c.writerWG.Done()
	defer c.nc.Close()
	var batch net.Buffers
	for {
		select {
		case b := <-c.out:
			// Whatever else is queued goes out in the same writev, up to
			// a fatal error frame: nothing may follow it on the wire (an
			// answer queued while fail ran can land behind it).
			batch = append(batch[:0], b)
			fatal := isFatalFrame(b)
		more:
			for len(batch) < 64 && !fatal {
				select {
				case b := <-c.out:
					batch = append(batch, b)
					fatal = isFatalFrame(b)
				default:
					break more
				}
			}
			if !c.write(batch) || fatal {
				return
			}
		case <-c.quit:
			// Drain what is queued (the fatal error frame last) within
			// the write deadline fail set.
			for {
				select {
				case b := <-c.out:
					if !c.write(net.Buffers{b}) || isFatalFrame(b) {
						return
					}
				default:
					return
				}
			}
		}
	}
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
	c.outBytes.Add(-int64(n))
	if c.spaceWaiters.Load() > 0 {
		c.spaceMu.Lock()
		close(c.space)
		c.space = make(chan struct{})
		c.spaceMu.Unlock()
	}
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
	select {
	case <-c.quit:
		return
	default:
	}
	if c.outBytes.Add(int64(len(b))) > int64(c.srv.cfg.QueueBytes) {
		c.outBytes.Add(-int64(len(b)))
		c.fail(fmt.Errorf("%w: more than %d bytes queued", wire.ErrOverflow, c.srv.cfg.QueueBytes), wire.CodeOverflow)
		return
	}
	select {
	case c.out <- b:
	default:
		c.outBytes.Add(-int64(len(b)))
		c.fail(fmt.Errorf("%w: more than %d frames queued", wire.ErrOverflow, c.srv.cfg.QueueFrames), wire.CodeOverflow)
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
	maxBytes := int64(c.srv.cfg.QueueBytes / streamQueueShare)
	maxFrames := max(cap(c.out)/streamQueueShare, 1)
	for {
		c.spaceMu.Lock()
		space := c.space
		c.spaceWaiters.Add(1)
		c.spaceMu.Unlock()
		// Checked after registering as a waiter: the writer either sees
		// the waiter or took its frames out before this check.
		q := c.outBytes.Load()
		if (q == 0 || q+int64(len(b)) <= maxBytes) && len(c.out) < maxFrames {
			c.spaceWaiters.Add(-1)
			c.enqueue(b)
			return nil
		}
		select {
		case <-space:
			c.spaceWaiters.Add(-1)
		case <-ctx.Done():
			c.spaceWaiters.Add(-1)
			return ctx.Err()
		case <-c.quit:
			c.spaceWaiters.Add(-1)
			return wire.ErrClosed
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

// forceEnqueue queues the fatal error frame, dropping the oldest queued
// frame if needed so that the last thing the peer reads says why.
func (c *conn) forceEnqueue(b []byte) {
	for {
		select {
		case c.out <- b:
			c.outBytes.Add(int64(len(b)))
			return
		default:
		}
		select {
		case old := <-c.out:
			c.outBytes.Add(-int64(len(old)))
		default:
		}
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

func (c *conn) readLoop() {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.cfg.HandshakeTimeout))
	handshaken := false
	for {
		f, err := c.dec.ReadFrame()
		if err == nil {
			err = faultinject.At(faultinject.Read, nil)
		}
		if err != nil {
			switch {
			case c.failed():
				// fail already ran (peer exited, overflow, shutdown).
			case errors.Is(err, os.ErrDeadlineExceeded) && !handshaken:
				c.fail(ErrHandshakeTimeout, wire.CodeProtocol)
			case errors.Is(err, wire.ErrProtocol):
				c.fail(err, wire.CodeProtocol)
			default:
				c.fail(err, "")
			}
			return
		}
		if !handshaken {
			if err := c.handshake(&f); err != nil {
				c.fail(err, wire.CodeOf(err))
				return
			}
			handshaken = true
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
				return
			}
			c.cancelRequest(f.ID)
			continue
		default:
			c.fail(wire.Errorf(nil, "a client may not send %v frames", f.Type), wire.CodeProtocol)
			return
		}
		req, err := parseRequest(&f)
		if err != nil {
			c.fail(err, wire.CodeProtocol)
			return
		}
		select {
		case c.sem <- struct{}{}:
		case <-c.quit:
			return
		}
		// Registered before the next frame is read, so that a cancel
		// right behind its request finds it.
		ir, err := c.register(&req.f)
		if err != nil {
			<-c.sem
			c.fail(err, wire.CodeProtocol)
			return
		}
		c.reqWG.Add(1)
		go func() {
			defer func() { c.settle(req.f.ID, ir); <-c.sem; c.reqWG.Done() }()
			c.handle(req, ir)
		}()
	}
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
	ctx, cancel := context.WithCancel(c.ctx)
	ir := &inflightReq{ctx: ctx, cancel: cancel}
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
		ir.cancel()
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
	ir.cancel()
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
	ctl, _ := json.Marshal(w)
	c.enqueue(c.encode(&wire.Frame{Type: wire.TypeWelcome, ID: f.ID, Control: ctl}))
	return nil
}

// request is one request frame with its control payload decoded.
type request struct {
	f     wire.Frame
	open  wire.OpenMsg
	hm    wire.HandleMsg // close, call
	admin wire.AdminMsg
}

// parseRequest decodes a request's control payload. It runs on the reading
// goroutine, before the request is dispatched, so that a malformed frame
// ends the connection before any frame behind it is served.
func parseRequest(f *wire.Frame) (*request, error) {
	// The decoder reuses its buffer: the request gets its own copy.
	r := &request{f: wire.Frame{Type: f.Type, ID: f.ID, Control: clone(f.Control), Data: clone(f.Data)}}
	var err error
	switch f.Type {
	case wire.TypeOpen:
		if err = json.Unmarshal(f.Control, &r.open); err != nil {
			return nil, wire.Errorf(err, "bad open payload")
		}
	case wire.TypeClose:
		if err = json.Unmarshal(f.Control, &r.hm); err != nil {
			return nil, wire.Errorf(err, "bad close payload")
		}
	case wire.TypeCall:
		if err = json.Unmarshal(f.Control, &r.hm); err != nil {
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
		ctx = ir.ctx
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
	e, info, err := c.openWaiting(ctx, m)
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
		return
	}
	c.next++
	e.handle = c.next
	c.sessions[e.handle] = e
	c.mu.Unlock()
	c.sendReply(id, wire.OpenReply{Handle: e.handle, Service: info, Client: e.sess.ClientID()}, nil)
	e.markReady()
}

// openWaiting opens the first service m matches; with m.Wait (version 2)
// it waits, until ctx ends, for one to be published or finish starting.
func (c *conn) openWaiting(ctx context.Context, m wire.OpenMsg) (*entry, userclient.ServiceInfo, error) {
	w, canWait := c.srv.backend.(Watcher)
	if !m.Wait || c.version < 2 || !canWait || m.Match.IsZero() {
		e, info, err := c.srv.openSession(ctx, c.cred, m.Match, c.notifier)
		if err != nil && m.Wait && c.version >= 2 && errors.Is(err, wire.ErrNoService) {
			err = fmt.Errorf("%w (this server cannot wait for a service to appear)", err)
		}
		return e, info, err
	}
	for {
		// Watch before looking: a service that arrives between the two
		// closes changed, so it is not missed.
		changed, stop := w.Watch()
		e, info, err := c.srv.openSession(ctx, c.cred, m.Match, c.notifier)
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

// notifier is the Notify function for the entry's session.
func (c *conn) notifier(e *entry) func(userclient.Notification) {
	e.send = func(n userclient.Notification) { c.sendNotification(e.handle, n) }
	return func(n userclient.Notification) {
		if !e.hold(n) {
			e.send(n)
		}
	}
}

// sendNotification queues a notification frame; one that cannot fit the
// peer's maximum frame is dropped with a log line (a driver bug).
func (c *conn) sendNotification(h uint64, n userclient.Notification) {
	b := wire.AppendNotification(nil, h, n)
	if len(b)-4 > c.srv.cfg.MaxFrame {
		c.cfg().Log.Warn("notification too large for the peer, dropped", "type", n.Type, "bytes", len(b)-4)
		return
	}
	c.enqueue(b)
}

func (c *conn) cfg() *Config { return &c.srv.cfg }

// hold keeps n until the open reply is queued, so that the application
// never sees a notification for a handle it does not know yet.
func (e *entry) hold(n userclient.Notification) bool {
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
		e.send(n)
	}
	e.pending = nil
	e.ready = true
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
	err := e.sess.Close()
	c.srv.sessions.Add(-1)
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
	c.answer(ctx, id, ir, fmt.Sprintf("call %q", method), nil, out, err)
}

// answer sends the outcome of a cancellable request: its reply — streamed
// in part frames first on a version 3 connection when it does not fit one
// frame, while the request can still be cancelled — or its error.
func (c *conn) answer(ctx context.Context, id uint64, ir *inflightReq, op string, v any, data []byte, err error) {
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
		c.sendCancelled(id, op, err)
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
	c.answer(ctx, id, ir, fmt.Sprintf("admin %q", m.Op), res, out, err)
}

// sendCancelled answers a request the client cancelled that failed after
// the cancel: whatever the method made of its cancelled context, the
// client asked for it. One that succeeded anyway gets its normal reply.
func (c *conn) sendCancelled(id uint64, op string, err error) {
	c.enqueue(c.errorFrame(id, 0, wire.CodeCancelled, fmt.Sprintf("%s cancelled by the client: %v", op, err)))
}

func (s *Server) admin(ctx context.Context, cred userclient.Cred, op string, args json.RawMessage, data []byte) (any, []byte, error) {
	if err := s.cfg.Policy.AllowAdmin(cred, op); err != nil {
		return nil, nil, err
	}
	if s.cfg.Admin == nil {
		return nil, nil, fmt.Errorf("%w: administrative call %q: this server has no admin handler", wire.ErrNoMethod, op)
	}
	return s.cfg.Admin(ctx, cred, op, args, data)
}

// openSession finds the first service matching m that the policy lets
// cred open, and opens it. notifier builds the session's Notify from its
// entry.
func (s *Server) openSession(ctx context.Context, cred userclient.Cred, m userclient.Match, notifier func(*entry) func(userclient.Notification)) (*entry, userclient.ServiceInfo, error) {
	if m.IsZero() {
		return nil, userclient.ServiceInfo{}, fmt.Errorf("%w: empty match", wire.ErrNoService)
	}
	cands, err := s.backend.Lookup(m)
	if err != nil {
		return nil, userclient.ServiceInfo{}, err
	}
	var denied error
	for _, info := range cands {
		if err := s.cfg.Policy.AllowOpen(cred, info); err != nil {
			denied = err
			continue
		}
		e := &entry{}
		sess, err := s.backend.Open(ctx, info.ID, OpenRequest{Cred: cred, Notify: notifier(e)})
		if errors.Is(err, wire.ErrNoService) {
			continue // it went away since Lookup: try the next
		}
		if err != nil {
			return nil, userclient.ServiceInfo{}, err
		}
		e.sess = sess
		s.sessions.Add(1)
		return e, sess.Info(), nil
	}
	if denied != nil {
		return nil, userclient.ServiceInfo{}, denied
	}
	// The client says what it looked for: the bare sentinel does not
	// repeat it.
	return nil, userclient.ServiceInfo{}, wire.ErrNoService
}
