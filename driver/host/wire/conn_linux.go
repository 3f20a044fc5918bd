package wire

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Conn is one end of the protocol's socket: whole messages, each with its
// descriptors. Send may be called from several goroutines; Receive from
// one at a time.
type Conn struct {
	c   *net.UnixConn
	wmu sync.Mutex

	// Receive's: its raw connection, the function it reads with (made
	// once, so that a read allocates nothing for it) and the buffer the
	// read in progress fills.
	rc     syscall.RawConn
	recvFn func(fd uintptr) bool
	rb     *recvBuf
}

// recvBuf is the room for one message: MaxMessage bytes and one more,
// which tells a message that is too large (SOCK_SEQPACKET truncates it).
type recvBuf struct {
	buf            [MaxMessage + 1]byte
	oob            [128]byte // oobSpace of it is used
	n, oobn, flags int
	err            error
}

var recvPool = sync.Pool{New: func() any { return new(recvBuf) }}

// oobSpace is room for MaxFiles descriptors and no more: the kernel says
// MSG_CTRUNC for more.
var oobSpace = unix.CmsgSpace(MaxFiles * 4)

// recv is Receive's read: one non-blocking recvmsg; false (EAGAIN) waits
// for the socket to be readable.
func (c *Conn) recv(fd uintptr) bool {
	rb := c.rb
	var err error
	rb.n, rb.oobn, rb.flags, _, err = unix.Recvmsg(int(fd), rb.buf[:], rb.oob[:oobSpace], unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
	if err == unix.EAGAIN {
		return false
	}
	if err != nil {
		rb.err = os.NewSyscallError("recvmsg", err)
	}
	return true
}

// Pair returns the two ends of a new SOCK_SEQPACKET socketpair, both
// close-on-exec: the daemon keeps the first and gives the second to the
// driver's process.
func Pair() (*Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	peer := os.NewFile(uintptr(fds[1]), "drvkit-driver-socket")
	c, err := NewConn(os.NewFile(uintptr(fds[0]), "drvkit-daemon-socket"))
	if err != nil {
		peer.Close()
		return nil, nil, err
	}
	return c, peer, nil
}

// NewConn takes f, a SOCK_SEQPACKET Unix socket, over (f is closed).
func NewConn(f *os.File) (*Conn, error) {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("%w: not a Unix socket", ErrMalformed)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, err
	}
	c := &Conn{c: uc, rc: rc}
	c.recvFn = c.recv
	return c, nil
}

// Send writes m with files attached (only a start message carries files).
func (c *Conn) Send(m *Message, files ...*os.File) error {
	b, err := Encode(m, len(files))
	if err != nil {
		return err
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = syscall.UnixRights(fds...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _, err = c.c.WriteMsgUnix(b, oob, nil)
	return err
}

// Receive reads the next message and the descriptors it carries (the
// caller owns them). io.EOF: the peer closed its end. A message that is
// too large, malformed, or carries descriptors it may not is an error
// (its descriptors are closed); the protocol says the receiver then gives
// up on the peer. The message is read with one recvmsg into a buffer
// borrowed from a pool for that moment, so a connection waiting for a
// message holds no buffer.
func (c *Conn) Receive() (*Message, []*os.File, error) {
	rb := recvPool.Get().(*recvBuf)
	defer recvPool.Put(rb)
	c.rb = rb
	err := c.rc.Read(c.recvFn)
	c.rb = nil
	n, oobn, flags := rb.n, rb.oobn, rb.flags
	if err == nil {
		err = rb.err
	}
	rb.err = nil
	if err != nil {
		return nil, nil, err
	}
	buf, oob := rb.buf[:], rb.oob[:]
	files, ferr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	switch {
	case ferr != nil:
		closeAll()
		return nil, nil, ferr
	case n == 0 && oobn == 0:
		return nil, nil, io.EOF // SOCK_SEQPACKET: the peer closed
	case flags&unix.MSG_TRUNC != 0 || n > MaxMessage:
		closeAll()
		return nil, nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, MaxMessage)
	case flags&unix.MSG_CTRUNC != 0:
		closeAll()
		return nil, nil, fmt.Errorf("%w: more than %d descriptors", ErrMalformed, MaxFiles)
	}
	m, err := Decode(buf[:n], len(files))
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return m, files, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %v", ErrMalformed, err)
	}
	var files []*os.File
	var bad error
	for _, cm := range msgs {
		fds, err := syscall.ParseUnixRights(&cm)
		if err != nil {
			bad = fmt.Errorf("%w: control message: %v", ErrMalformed, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "received"))
		}
	}
	if bad != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, bad
	}
	return files, nil
}

// Close closes the connection; a Receive blocked on it returns.
func (c *Conn) Close() error { return c.c.Close() }

// CloseWrite ends what this side sends: the peer reads io.EOF.
func (c *Conn) CloseWrite() error { return c.c.CloseWrite() }
