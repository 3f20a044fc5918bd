package devgrant

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
)

// readBuf is a reader's buffer between messages; a larger message gets a
// buffer of its size.
const readBuf = 2048

// maxInflight bounds the requests one driver has the daemon work on at
// once; beyond it a request is answered codeTooMany at once.
const maxInflight = 32

// handler serves one request of a class: it appends the reply's body to
// out and returns it, or fails. ctx ends when the driver cancels the
// request or the grant closes.
type handler func(ctx context.Context, op byte, body []byte, out []byte) ([]byte, error)

// server is the daemon's end of a device socket: it reads requests and
// runs each on a goroutine of its own (a read waiting for a report must
// not hold up a write), until stop.
type server struct {
	conn  *net.UnixConn
	serve handler
	codes codeTable

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	inflight map[uint32]context.CancelFunc
	err      error // why reading ended early (a malformed message)
}

var replyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func startServer(conn *net.UnixConn, h handler, codes codeTable) *server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{conn: conn, serve: h, codes: codes, ctx: ctx, cancel: cancel, inflight: map[uint32]context.CancelFunc{}}
	s.wg.Add(1)
	go s.read()
	return s
}

func (s *server) read() {
	defer s.wg.Done()
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return
	}
	pr := newPacketReader(rc, readBuf)
	for {
		p, err := pr.next()
		if err != nil && !errors.Is(err, ErrProtocol) {
			return // the driver's end is closed, or stop closed ours
		}
		m, perr := parseMessage(p)
		if err == nil {
			err = perr
		}
		if err != nil {
			// A driver that speaks something else gets nothing more:
			// its end reads EOF, as if the device went.
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			_ = s.conn.CloseWrite()
			return
		}
		if m.op == opCancel {
			s.mu.Lock()
			if c := s.inflight[m.id]; c != nil {
				c()
			}
			s.mu.Unlock()
			continue
		}
		s.mu.Lock()
		_, dup := s.inflight[m.id]
		if len(s.inflight) >= maxInflight || dup {
			s.mu.Unlock()
			s.reply(m.id, nil, errTooMany)
			continue
		}
		ctx, cancel := context.WithCancel(s.ctx)
		s.inflight[m.id] = cancel
		s.mu.Unlock()
		body := append([]byte(nil), m.body...) // buf is reused
		s.wg.Add(1)
		go func(op byte, id uint32) {
			defer s.wg.Done()
			bp := replyBufs.Get().(*[]byte)
			out, err := s.serve(ctx, op, body, appendHeader((*bp)[:0], opReply, id))
			s.mu.Lock()
			delete(s.inflight, id)
			s.mu.Unlock()
			cancel()
			if s.ctx.Err() != nil {
				// The grant is closing: the driver hears EOF (device
				// gone), not that its request was cancelled.
				err, out = nil, nil
			}
			switch {
			case out == nil && err == nil:
			case err != nil:
				s.reply(id, nil, err)
			default:
				_, _, _ = s.conn.WriteMsgUnix(out, nil, nil)
			}
			if out != nil && cap(out) <= 64<<10 {
				*bp = out[:0]
				replyBufs.Put(bp)
			}
		}(m.op, m.id)
	}
}

func (s *server) reply(id uint32, out []byte, err error) {
	var code byte
	var text string
	switch {
	case errors.Is(err, errTooMany):
		code = codeTooMany
	case errors.Is(err, context.Canceled):
		code = codeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codeDeadline
	default:
		code, text = s.codes.encode(err)
	}
	out = appendError(appendHeader(out, opError, id), code, text)
	_, _, _ = s.conn.WriteMsgUnix(out, nil, nil)
}

// stop ends every request, closes the socket and waits for the goroutines;
// release (the device's close) runs between the two, so that a request
// blocked in the device is woken by it even if it ignores its context.
func (s *server) stop(release func() error) error {
	s.cancel()
	err := s.conn.Close()
	if release != nil {
		err = errors.Join(release(), err)
	}
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(err, s.err)
}

// client is the driver's end of a device socket. Requests from several
// goroutines are multiplexed by id; a reader goroutine runs while the
// device is open (sockets counts the opens), so a driver that closed its
// device leaves no goroutine or descriptor behind.
type client struct {
	conn  *net.UnixConn
	codes codeTable
	gone  error         // what every call fails with once the daemon's end is gone
	done  chan struct{} // closed when the reader returns
	users int           // opens, under sockets.mu

	mu      sync.Mutex
	next    uint32
	pending map[uint32]chan []byte // the reply packet (op, id, body)
	closing bool                   // shutdown was called
	dead    bool                   // the daemon's end is gone
}

func newClient(conn *net.UnixConn, codes codeTable, gone error) *client {
	c := &client{conn: conn, codes: codes, gone: gone, done: make(chan struct{}), pending: map[uint32]chan []byte{}}
	go c.read()
	return c
}

// shutdown closes the connection and waits for the reader; calls still
// pending fail.
func (c *client) shutdown() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	_ = c.conn.Close()
	<-c.done
}

func (c *client) read() {
	defer close(c.done)
	rc, err := c.conn.SyscallConn()
	pr := newPacketReader(rc, readBuf)
	for err == nil {
		var p []byte
		if p, err = pr.next(); err != nil {
			break
		}
		m, perr := parseMessage(p)
		if perr != nil || (m.op != opReply && m.op != opError) {
			break
		}
		c.mu.Lock()
		ch := c.pending[m.id]
		delete(c.pending, m.id)
		c.mu.Unlock()
		if ch != nil {
			ch <- append([]byte(nil), p[1:]...)
		}
	}
	// EOF (the daemon closed the grant), garbage, or shutdown.
	c.mu.Lock()
	c.dead = c.dead || !c.closing
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// request starts a request packet of op; append its body, then call.
func request(op byte, size int) []byte {
	return appendHeader(make([]byte, 0, headerLen+size), op, 0)
}

// call sends the request pkt and waits for its reply body. A reply of
// error becomes the class's error; the context's end, or stop (the
// device's Close), cancels the request.
func (c *client) call(ctx context.Context, stop <-chan struct{}, pkt []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan []byte, 1)
	c.mu.Lock()
	switch {
	case c.dead:
		c.mu.Unlock()
		return nil, c.gone
	case c.closing:
		c.mu.Unlock()
		return nil, errClosedSocket
	}
	c.next++
	id := c.next
	c.pending[id] = ch
	c.mu.Unlock()
	binary.LittleEndian.PutUint32(pkt[2:], id)
	if _, _, err := c.conn.WriteMsgUnix(pkt, nil, nil); err != nil {
		c.forget(id)
		return nil, c.fail()
	}
	var r []byte
	var ok bool
	select {
	case r, ok = <-ch:
	case <-ctx.Done():
		c.cancel(id)
		return nil, ctx.Err()
	case <-stop:
		c.cancel(id)
		return nil, errClosedSocket
	}
	if !ok {
		return nil, c.fail()
	}
	if r[0] == opReply {
		return r[5:], nil
	}
	code, text, err := parseError(r[5:])
	switch {
	case err != nil:
		return nil, err
	case code == codeCanceled:
		return nil, context.Canceled
	case code == codeDeadline:
		return nil, context.DeadlineExceeded
	case code == codeTooMany:
		return nil, errTooMany
	}
	return nil, c.codes.decode(code, text)
}

// fail is the error of a call whose connection ended under it.
func (c *client) fail() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing && !c.dead {
		return errClosedSocket
	}
	return c.gone
}

func (c *client) cancel(id uint32) {
	c.forget(id)
	_, _, _ = c.conn.WriteMsgUnix(appendHeader(make([]byte, 0, headerLen), opCancel, id), nil, nil)
}

func (c *client) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// errClosedSocket: a call on a device whose handle was closed.
var errClosedSocket = errors.New("device closed")

// sockets are the driver's connections over the sockets of one resource,
// one per granted node, opened on a device's first open and closed with
// its last close.
type sockets struct {
	codes codeTable
	gone  error

	mu sync.Mutex
	m  map[string]*client
}

func newSockets(codes codeTable, gone error) *sockets {
	return &sockets{codes: codes, gone: gone, m: map[string]*client{}}
}

func (s *sockets) open(f Received) (*client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.m[f.Node]
	if c == nil {
		conn, err := socketConn(f.File)
		if err != nil {
			return nil, err
		}
		c = newClient(conn, s.codes, s.gone)
		s.m[f.Node] = c
	}
	c.users++
	return c, nil
}

func (s *sockets) close(node string, c *client) {
	s.mu.Lock()
	c.users--
	last := c.users == 0
	if last && s.m[node] == c {
		delete(s.m, node)
	}
	s.mu.Unlock()
	if last {
		c.shutdown()
	}
}

// sockDev is one open of a device served over a socket: its calls end when
// it is closed.
type sockDev struct {
	s    *sockets
	c    *client
	node string
	stop chan struct{}
	once sync.Once
}

func openSockDev(s *sockets, f Received) (*sockDev, error) {
	c, err := s.open(f)
	if err != nil {
		return nil, err
	}
	return &sockDev{s: s, c: c, node: f.Node, stop: make(chan struct{})}, nil
}

func (d *sockDev) closed() bool {
	select {
	case <-d.stop:
		return true
	default:
		return false
	}
}

func (d *sockDev) call(ctx context.Context, pkt []byte) ([]byte, error) {
	if d.closed() {
		return nil, errClosedSocket
	}
	return d.c.call(ctx, d.stop, pkt)
}

// close reports false if d was closed already.
func (d *sockDev) close() bool {
	first := false
	d.once.Do(func() {
		first = true
		close(d.stop)
		d.s.close(d.node, d.c)
	})
	return first
}
