//go:build linux

package hid

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Hidraw is the Backend of the kernel's /dev/hidrawN nodes.
type Hidraw struct{}

var _ Backend = Hidraw{}

// Open implements Backend.
func (Hidraw) Open(node string) (Device, error) {
	fd, err := unix.Open(node, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &OpError{Op: "open", Node: node, Err: mapErrno(err)}
	}
	// A non-blocking fd in os.File is registered with the runtime poller:
	// a read parks the goroutine, a deadline or Close wakes it.
	return newRaw(os.NewFile(uintptr(fd), node), node)
}

// FromFile returns the Device of a hidraw node the caller opened (or
// received from a process that could open it: package devgrant hands a
// driver process its node this way). The Device works on a duplicate of f's
// descriptor, switched to non-blocking so that reads park in the runtime
// poller and Close or a context ends them; f stays the caller's. The
// non-blocking flag belongs to the open file, which f shares.
func FromFile(f *os.File, node string) (Device, error) {
	var fd int
	var err error
	rc, cerr := f.SyscallConn()
	if cerr != nil {
		return nil, &OpError{Op: "open", Node: node, Err: mapErrno(cerr)}
	}
	if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, &OpError{Op: "open", Node: node, Err: mapErrno(err)}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, &OpError{Op: "open", Node: node, Err: err}
	}
	return newRaw(os.NewFile(uintptr(fd), node), node)
}

// raw is an open hidraw node.
type raw struct {
	f    *os.File
	rc   syscall.RawConn
	node string
	rmu  sync.Mutex // one reader at a time: the read deadline is per file
}

func newRaw(f *os.File, node string) (*raw, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, &OpError{Op: "open", Node: node, Err: err}
	}
	return &raw{f: f, rc: rc, node: node}, nil
}

// mapErrno turns what hidraw returns for a vanished device into
// ErrNoDevice: -EIO from read and poll once the device is gone, -ENODEV
// from write and ioctl, ENOENT/ENXIO from open.
func mapErrno(err error) error {
	// The OpError names the operation and the node: drop the *PathError
	// os.File adds, which would say both again.
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO), errors.Is(err, unix.EIO),
		errors.Is(err, unix.ESHUTDOWN), errors.Is(err, unix.ENOENT):
		return ErrNoDevice
	case errors.Is(err, os.ErrClosed):
		return ErrClosed
	}
	return err
}

func (d *raw) ReadInput(ctx context.Context, p []byte) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if ctx.Done() != nil {
		woke := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(woke)
			d.f.SetReadDeadline(time.Unix(1, 0))
		})
		defer func() {
			if !stop() {
				<-woke
				d.f.SetReadDeadline(time.Time{})
			}
		}()
	}
	for {
		n, err := d.f.Read(p)
		switch {
		case err == nil && n == 0:
			continue // a zero-length report: wait for a real one
		case err == nil:
			return n, nil
		case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
			return 0, ctx.Err()
		case errors.Is(err, io.EOF):
			return 0, &OpError{Op: "read", Node: d.node, Err: ErrNoDevice}
		}
		return 0, &OpError{Op: "read", Node: d.node, Err: mapErrno(err)}
	}
}

func (d *raw) WriteOutput(report []byte) error {
	if err := checkReport("write", d.node, report); err != nil {
		return err
	}
	if _, err := d.f.Write(report); err != nil {
		return &OpError{Op: "write", Node: d.node, Err: mapErrno(err)}
	}
	return nil
}

// ioctl request numbers. The sized ones (HIDIOCSFEATURE(len), ...) are
// built from the direction bits of two fixed ones x/sys/unix has for every
// architecture, since the bits differ between them (ppc, mips, sparc).
var iocReadWrite = uintptr((unix.HIDIOCGRAWINFO | unix.HIDIOCREVOKE) &^ (0x3fff<<16 | 0xffff))

// maxIoctlReport is the largest length an ioctl's size field holds on
// every architecture (13 bits on ppc, mips and sparc).
const maxIoctlReport = 1<<13 - 1

func iocHID(nr, size int) uintptr {
	return iocReadWrite | uintptr(size)<<16 | uintptr('H')<<8 | uintptr(nr)
}

func (d *raw) ioctl(op string, req uintptr, arg unsafe.Pointer) (int, error) {
	var r uintptr
	var errno syscall.Errno
	err := d.rc.Control(func(fd uintptr) {
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return 0, &OpError{Op: "ioctl " + op, Node: d.node, Err: mapErrno(err)}
	}
	return int(r), nil
}

func (d *raw) SetFeature(report []byte) error {
	if err := checkReport("ioctl HIDIOCSFEATURE", d.node, report); err != nil {
		return err
	}
	if len(report) > maxIoctlReport {
		return &OpError{Op: "ioctl HIDIOCSFEATURE", Node: d.node, Err: ErrReportSize}
	}
	_, err := d.ioctl("HIDIOCSFEATURE", iocHID(0x06, len(report)), unsafe.Pointer(&report[0]))
	return err
}

func (d *raw) GetFeature(id byte, p []byte) (int, error) {
	if err := checkReport("ioctl HIDIOCGFEATURE", d.node, p); err != nil {
		return 0, err
	}
	if len(p) > maxIoctlReport {
		p = p[:maxIoctlReport]
	}
	p[0] = id
	return d.ioctl("HIDIOCGFEATURE", iocHID(0x07, len(p)), unsafe.Pointer(&p[0]))
}

func (d *raw) Info() (Info, error) {
	var di struct {
		Bus     uint32
		Vendor  int16
		Product int16
	}
	if _, err := d.ioctl("HIDIOCGRAWINFO", unix.HIDIOCGRAWINFO, unsafe.Pointer(&di)); err != nil {
		return Info{}, err
	}
	return Info{Bus: di.Bus, Vendor: uint16(di.Vendor), Product: uint16(di.Product)}, nil
}

func (d *raw) ReportDescriptor() ([]byte, error) {
	var size int32
	if _, err := d.ioctl("HIDIOCGRDESCSIZE", unix.HIDIOCGRDESCSIZE, unsafe.Pointer(&size)); err != nil {
		return nil, err
	}
	if size <= 0 || size > MaxDescriptorSize {
		return nil, &OpError{Op: "ioctl HIDIOCGRDESCSIZE", Node: d.node, Err: &DescriptorError{Reason: "size out of range"}}
	}
	var rd struct {
		Size  uint32
		Value [MaxDescriptorSize]byte
	}
	rd.Size = uint32(size)
	if _, err := d.ioctl("HIDIOCGRDESC", unix.HIDIOCGRDESC, unsafe.Pointer(&rd)); err != nil {
		return nil, err
	}
	return append([]byte(nil), rd.Value[:size]...), nil
}

func (d *raw) Close() error {
	if err := d.f.Close(); err != nil {
		return &OpError{Op: "close", Node: d.node, Err: mapErrno(err)}
	}
	return nil
}

// checkReport refuses a report hidraw would before the system call: the
// report ID byte (0 for a device without numbered reports) and at least one
// byte of data, within MaxReportSize.
func checkReport(op, node string, report []byte) error {
	if len(report) < 2 || len(report) > MaxReportSize {
		return &OpError{Op: op, Node: node, Err: ErrReportSize}
	}
	return nil
}
