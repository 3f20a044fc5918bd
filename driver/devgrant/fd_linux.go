package devgrant

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketPair returns a connected SOCK_SEQPACKET pair: the daemon's end as
// a connection, the driver's as a file to pass on.
func socketPair(name string) (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	ours := os.NewFile(uintptr(fds[0]), name)
	c, err := net.FileConn(ours) // a duplicate, in the runtime poller
	ours.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), name), nil
}

// socketConn is the driver's connection over a received socket (a
// duplicate: f stays the caller's).
func socketConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%w: not a unix socket", ErrNotDevice)
	}
	return uc, nil
}

// openNode opens a device node for a grant: read-write, not inherited,
// never a symlink or a controlling terminal, and only a character device.
func openNode(node string) (*os.File, error) {
	fd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: node, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: node, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		unix.Close(fd)
		return nil, ErrNotDevice
	}
	return os.NewFile(uintptr(fd), node), nil
}

// dupFile duplicates f's descriptor (close-on-exec).
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("dup", derr)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// packetReader reads packets from a socket with one recvmsg each: into
// its small buffer when the packet fits, else through a pooled buffer for
// the largest message into a slice of the packet's size. A reader waiting
// between messages holds only the small buffer; a large one is borrowed
// for the system call alone. A packet over maxMessage is consumed and
// refused.
type packetReader struct {
	rc  syscall.RawConn
	buf []byte
	fn  func(fd uintptr) bool // r.read, bound once (a method value allocates)
	iov [2]unix.Iovec
	msg unix.Msghdr

	p   []byte
	err error
}

// bigBufs are the second halves of a read: room for the largest message.
var bigBufs = sync.Pool{New: func() any { b := make([]byte, maxMessage+1); return &b }}

func newPacketReader(rc syscall.RawConn, size int) *packetReader {
	r := &packetReader{rc: rc, buf: make([]byte, size)}
	r.fn = r.read
	r.iov[0].Base = &r.buf[0]
	r.iov[0].SetLen(size)
	r.msg.Iov = &r.iov[0]
	r.msg.SetIovlen(2)
	return r
}

// next returns the next packet (valid until the following call), or io.EOF
// once the peer's end is closed.
func (r *packetReader) next() ([]byte, error) {
	if err := r.rc.Read(r.fn); err != nil {
		return nil, err
	}
	return r.p, r.err
}

func (r *packetReader) read(fd uintptr) bool {
	big := bigBufs.Get().(*[]byte)
	defer bigBufs.Put(big)
	r.iov[1].Base = &(*big)[0]
	r.iov[1].SetLen(len(*big))
	r.msg.Flags = 0
	n, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), 0)
	r.iov[1].Base = nil // the pool's buffer is not ours after the call
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		return false
	case e != 0:
		r.p, r.err = nil, e
	case n == 0:
		r.p, r.err = nil, io.EOF
	case int(n) > maxMessage || r.msg.Flags&unix.MSG_TRUNC != 0:
		r.p, r.err = nil, fmt.Errorf("%w: more than %d bytes", ErrProtocol, maxMessage)
	case int(n) <= len(r.buf):
		r.p, r.err = r.buf[:n], nil
	default:
		p := make([]byte, n)
		copy(p, r.buf)
		copy(p[len(r.buf):], *big)
		r.p, r.err = p, nil
	}
	return true
}
