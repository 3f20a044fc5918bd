package devgrant

import (
	"fmt"
	"io"
	"net"
	"os"
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

// packetReader reads packets from a socket: into buf when one fits, else
// into a slice of its own size, so that a reader waiting between messages
// holds a small buffer rather than one for the largest message. A packet
// over maxMessage is consumed and refused.
type packetReader struct {
	rc  syscall.RawConn
	buf []byte
	fn  func(fd uintptr) bool // r.read, bound once (a method value allocates)

	p   []byte
	err error
}

func newPacketReader(rc syscall.RawConn, size int) *packetReader {
	r := &packetReader{rc: rc, buf: make([]byte, size)}
	r.fn = r.read
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

func recv(fd uintptr, p []byte, flags int) (int, syscall.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), uintptr(flags), 0, 0)
	return int(n), e
}

func (r *packetReader) read(fd uintptr) bool {
	// MSG_TRUNC with MSG_PEEK returns the packet's real length.
	n, e := recv(fd, r.buf[:1], unix.MSG_PEEK|unix.MSG_TRUNC)
	switch {
	case e == unix.EAGAIN || e == unix.EINTR:
		return false
	case e != 0:
		r.p, r.err = nil, e
		return true
	case n == 0:
		r.p, r.err = nil, io.EOF
		return true
	}
	p := r.buf
	if n > len(p) && n <= maxMessage {
		p = make([]byte, n)
	}
	m, e := recv(fd, p, 0)
	switch {
	case e != 0:
		r.p, r.err = nil, e
	case n > maxMessage:
		r.p, r.err = nil, fmt.Errorf("%w: %d bytes, more than %d", ErrProtocol, n, maxMessage)
	default:
		r.p, r.err = p[:m], nil
	}
	return true
}
