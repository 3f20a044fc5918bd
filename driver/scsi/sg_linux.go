package scsi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SG is a Transport on a Linux SCSI generic node (/dev/sgN) using the SG_IO
// ioctl. SG_IO blocks the calling thread until the command completes or
// its timeout expires; a context's deadline shortens that timeout, but a
// cancelled context cannot abort a command already issued (the kernel owns
// the buffers until it returns). Concurrent Executes are allowed.
type SG struct {
	path    string
	f       *os.File
	rc      syscall.RawConn
	version int
	// stateFile is the sysfs state of the SCSI device behind the node,
	// resolved at open (after an unplug the class link is gone): what a
	// failed command's host status is checked against.
	stateFile string
}

// goneSettle is how long deviceGone waits for a device whose command
// failed to show a removal in its state: the midlayer fails in-flight
// commands while it removes the device, and the state may still read
// "running" for a moment. A device that stays costs this once, on an
// error path.
const goneSettle = 100 * time.Millisecond

// sysfsClassSG is where the kernel lists sg nodes (tests point it
// elsewhere).
var sysfsClassSG = "/sys/class/scsi_generic"

// sgStateFile resolves /sys/class/scsi_generic/sgN/device/state to the
// device's own directory; "" if there is none (not a kernel sg node).
func sgStateFile(path string) string {
	dev, err := filepath.EvalSymlinks(filepath.Join(sysfsClassSG, filepath.Base(path), "device"))
	if err != nil {
		return ""
	}
	return filepath.Join(dev, "state")
}

var _ Transport = (*SG)(nil)

// OpenSG opens a SCSI generic node and checks that it speaks the sg v3
// interface (SG_GET_VERSION_NUM ≥ 30000); anything else gives ErrNotSG.
func OpenSG(path string) (*SG, error) {
	// A blocking descriptor wrapped by os.NewFile stays out of the runtime
	// poller, so Close waits for in-flight ioctls instead of racing them.
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &OpError{Op: "open " + path, Err: mapErrno(err)}
	}
	return newSG(os.NewFile(uintptr(fd), path), path)
}

// SGFromFile returns the Transport of an sg node the caller opened (or
// received from a process that could open it: package devgrant hands a
// driver process its node this way), checked as OpenSG checks. The SG
// works on a duplicate of f's descriptor; f stays the caller's.
func SGFromFile(f *os.File, path string) (*SG, error) {
	var fd int
	var err error
	rc, cerr := f.SyscallConn()
	if cerr == nil {
		cerr = rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	}
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, &OpError{Op: "open " + path, Err: mapErrno(err)}
	}
	// Blocking, as OpenSG's (see there); the flag is the open file's.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &OpError{Op: "open " + path, Err: err}
	}
	return newSG(os.NewFile(uintptr(fd), path), path)
}

func newSG(f *os.File, path string) (*SG, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, &OpError{Op: "open " + path, Err: err}
	}
	s := &SG{path: path, f: f, rc: rc}
	var ver int32
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, sgGetVersionNum, uintptr(unsafe.Pointer(&ver)))
		if e != 0 {
			ioErr = e
		}
	}); err != nil {
		ioErr = err
	}
	if ioErr != nil || ver < sgMinVersion {
		f.Close()
		if ioErr == nil {
			ioErr = fmt.Errorf("sg driver version %d, need %d", ver, sgMinVersion)
		}
		return nil, &OpError{Op: "SG_GET_VERSION_NUM " + path, Err: fmt.Errorf("%w (%v)", ErrNotSG, ioErr)}
	}
	s.version = int(ver)
	s.stateFile = sgStateFile(path)
	return s, nil
}

// File returns the node's open file, owned by s (valid until Close).
func (s *SG) File() *os.File { return s.f }

// Path returns the device node.
func (s *SG) Path() string { return s.path }

// Version returns the sg driver version (e.g. 30536 for 3.5.36).
func (s *SG) Version() int { return s.version }

// Close closes the node; it waits for in-flight commands.
func (s *SG) Close() error { return s.f.Close() }

const senseLen = 96

// Execute implements Transport.
func (s *SG) Execute(ctx context.Context, cmd *Command) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, &OpError{Op: "sg_io", Err: err}
	}
	if len(cmd.CDB) == 0 || len(cmd.CDB) > 255 {
		return Result{}, &OpError{Op: "sg_io", Err: fmt.Errorf("%w: CDB of %d bytes", ErrInvalidRequest, len(cmd.CDB))}
	}
	if uint64(len(cmd.Data)) > 0xffffffff {
		return Result{}, &OpError{Op: "sg_io", Err: fmt.Errorf("%w: %d data bytes", ErrInvalidRequest, len(cmd.Data))}
	}
	to := timeoutFor(ctx, cmd.Timeout)
	if to <= 0 {
		return Result{}, &OpError{Op: "sg_io", Err: context.DeadlineExceeded}
	}
	sense := make([]byte, senseLen)
	h := &sgIOHdr{
		InterfaceID:    'S',
		DxferDirection: sgDxferNone,
		CmdLen:         uint8(len(cmd.CDB)),
		MxSbLen:        senseLen,
		Timeout:        uint32(min(to.Milliseconds(), 0xfffffffe)), // 0xffffffff would mean "no timeout"
	}
	if h.Timeout == 0 {
		h.Timeout = 1
	}
	// The kernel reads and writes these buffers during the ioctl through
	// addresses stored as integers, which the GC does not see: pin them so
	// they stay alive and in place until the call returns.
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&cmd.CDB[0])
	h.Cmdp = uintptr(unsafe.Pointer(&cmd.CDB[0]))
	pin.Pin(&sense[0])
	h.Sbp = uintptr(unsafe.Pointer(&sense[0]))
	if cmd.Dir != DirNone && len(cmd.Data) > 0 {
		pin.Pin(&cmd.Data[0])
		h.Dxferp = uintptr(unsafe.Pointer(&cmd.Data[0]))
		h.DxferLen = uint32(len(cmd.Data))
		if cmd.Dir == DirIn {
			h.DxferDirection = sgDxferFromDev
		} else {
			h.DxferDirection = sgDxferToDev
		}
	}
	pin.Pin(h)

	var errno syscall.Errno
	if err := s.rc.Control(func(fd uintptr) {
		for {
			_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, sgIO, uintptr(unsafe.Pointer(h)))
			if errno != unix.EINTR {
				return
			}
		}
	}); err != nil {
		// Control fails only once the file is closed.
		return Result{}, &OpError{Op: "sg_io", Err: fmt.Errorf("%w (%v)", ErrClosed, err)}
	}
	runtime.KeepAlive(cmd)
	runtime.KeepAlive(sense)
	if errno != 0 {
		return Result{}, &OpError{Op: "sg_io " + s.path, Err: ioctlErr(errno, s.stateFile, goneSettle)}
	}
	res := Result{Status: Status(h.Status), Residual: int(h.Resid)}
	if h.SbLenWr > 0 {
		res.Sense = sense[:min(int(h.SbLenWr), senseLen)]
	}
	if err := hostDriverError(h.HostStatus, h.DriverStatus); err != nil {
		// With sense data the SCSI layer has a better story; keep it.
		if res.Status == StatusCheckCondition && len(res.Sense) > 0 {
			return res, nil
		}
		err.(*HostError).checkState(s.stateFile, goneSettle)
		return res, &OpError{Op: "sg_io " + s.path, Err: err}
	}
	return res, nil
}

// ioctlErr maps the errno of a failed SG_IO. sg answers ENODEV once it
// let go of a removed device, and the block layer ENODEV when the queue is
// dying; an I/O-ish errno (EIO, ETIMEDOUT, EBUSY, EAGAIN) is ErrNoDevice
// too when the device's state shows it gone.
func ioctlErr(errno syscall.Errno, stateFile string, settle time.Duration) error {
	err := mapErrno(errno)
	switch errno {
	case unix.EIO, unix.ETIMEDOUT, unix.EBUSY, unix.EAGAIN:
		if state, gone := deviceGone(stateFile, settle); gone {
			return fmt.Errorf("%w (%w, device state %s)", ErrNoDevice, errno, state)
		}
	}
	return err
}

// mapErrno turns the errnos of a vanished device into ErrNoDevice (the
// errno stays matchable).
func mapErrno(err error) error {
	switch {
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w (%w)", ErrNoDevice, err)
	case errors.Is(err, unix.ETIMEDOUT):
		return fmt.Errorf("%w (%w)", ErrTimeout, err)
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EAGAIN):
		return fmt.Errorf("%w (%w)", ErrBusy, err)
	}
	return err
}

// hostDriverError returns nil when host and driver status report success.
// DRIVER_SENSE only says sense data is present, which the status conveys.
func hostDriverError(host, driver uint16) error {
	if host == hostOK && (driver&0x0f == driverOK || driver&0x0f == driverSense) {
		return nil
	}
	return &HostError{Host: host, Driver: driver}
}
