//go:build linux && cgo

// Only the libusb backend (gousb_linux.go, cgo) asks usbfs directly.

package usb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// usbfs ioctls for kernel-driver bookkeeping, checked against
// <linux/usbdevice_fs.h> in usbfs_linux_test.go. gousb v1.1.3 only offers
// libusb's auto-detach, which re-attaches blindly on release and does not
// say what it detached; drvkit needs to know which driver it took away so
// it can give exactly that back, so it asks usbfs directly.
const (
	usbdevfsGetDriver  = 0x41045508                                         // _IOW('U', 8, struct usbdevfs_getdriver)
	usbdevfsIoctl      = 0xc0005512 | unsafe.Sizeof(usbdevfsIoctlArg{})<<16 // _IOWR('U', 18, struct usbdevfs_ioctl)
	usbdevfsDisconnect = 0x5516                                             // _IO('U', 22)
	usbdevfsConnect    = 0x5517                                             // _IO('U', 23)
)

type usbdevfsGetdriver struct {
	Interface uint32
	Driver    [256]byte
}

type usbdevfsIoctlArg struct {
	Ifno      int32
	IoctlCode int32
	Data      uintptr
}

// usbfsPath is where usbfs device nodes live; a variable for tests.
var usbfsRoot = "/dev/bus/usb"

// usbfs is a second usbfs handle on a device, used only for driver
// binding queries and connect/disconnect.
type usbfs struct {
	f  *os.File
	rc syscall.RawConn
}

func openUsbfs(bus, addr int) (*usbfs, error) {
	p := fmt.Sprintf("%s/%03d/%03d", usbfsRoot, bus, addr)
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, mapErrno(err)
	}
	f := os.NewFile(uintptr(fd), p)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &usbfs{f: f, rc: rc}, nil
}

func (u *usbfs) close() error { return u.f.Close() }

func (u *usbfs) ioctl(req uintptr, arg unsafe.Pointer) error {
	var errno syscall.Errno
	if err := u.rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return ErrClosed
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// driver returns the name of the kernel driver bound to interface iface,
// or "" if none is.
func (u *usbfs) driver(iface int) (string, error) {
	arg := usbdevfsGetdriver{Interface: uint32(iface)}
	if err := u.ioctl(usbdevfsGetDriver, unsafe.Pointer(&arg)); err != nil {
		if errors.Is(err, unix.ENODATA) {
			return "", nil
		}
		return "", mapErrno(err)
	}
	n := bytes.IndexByte(arg.Driver[:], 0)
	if n < 0 {
		n = len(arg.Driver)
	}
	return string(arg.Driver[:n]), nil
}

func (u *usbfs) disconnect(iface int) error {
	arg := usbdevfsIoctlArg{Ifno: int32(iface), IoctlCode: usbdevfsDisconnect}
	if err := u.ioctl(usbdevfsIoctl, unsafe.Pointer(&arg)); err != nil && !errors.Is(err, unix.ENODATA) {
		return mapErrno(err)
	}
	return nil
}

func (u *usbfs) connect(iface int) error {
	arg := usbdevfsIoctlArg{Ifno: int32(iface), IoctlCode: usbdevfsConnect}
	return mapErrno(u.ioctl(usbdevfsIoctl, unsafe.Pointer(&arg)))
}

func mapErrno(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESHUTDOWN):
		return fmt.Errorf("%w (%v)", ErrNoDevice, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w (%v)", ErrBusy, err)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w (%v)", ErrAccess, err)
	case errors.Is(err, unix.ETIMEDOUT):
		return fmt.Errorf("%w (%v)", ErrTimeout, err)
	}
	return err
}
