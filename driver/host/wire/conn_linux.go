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
	return &Conn{c: uc}, nil
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
// up on the peer. The message's size is peeked first, so a connection
// waiting for a message holds no buffer.
func (c *Conn) Receive() (*Message, []*os.File, error) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var (
		n, oobn, flags int
		buf, oob       []byte
		rerr           error
	)
	err = rc.Read(func(fd uintptr) bool {
		var peek [1]byte
		size, _, _, _, err := unix.Recvmsg(int(fd), peek[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return false
		}
		if err != nil {
			rerr = os.NewSyscallError("recvmsg", err)
			return true
		}
		buf = make([]byte, min(size, MaxMessage+1))
		if len(buf) == 0 {
			buf = peek[:]
		}
		oob = make([]byte, unix.CmsgSpace(MaxFiles*4))
		n, oobn, flags, _, err = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return false
		}
		if err != nil {
			rerr = os.NewSyscallError("recvmsg", err)
		}
		if size > MaxMessage {
			flags |= unix.MSG_TRUNC
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, nil, err
	}
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
